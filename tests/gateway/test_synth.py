"""Synthesis (gateway.synth) and addresses (gateway.route): pure, so tested on their own."""
from __future__ import annotations

import random

import pytest

from qis.edge import fingerprint as fp
from qis.gateway import route
from qis.gateway.records import KIND_CONFIRMATION, KIND_OUTCOME, Record
from qis.gateway.synth import Aggregate, combine


def rec(site: str, n: int, label: int, model: int = 3, confirmed: int | None = None, conf: int = 6) -> Record:
    kind = KIND_OUTCOME if confirmed is None else KIND_CONFIRMATION
    return Record(kind, f"{site}-{n}".encode().ljust(16, b"."), site, b"p" * 8, 1, model, label, conf, "full",
                  bytes(16), 490000, confirmed)


def test_applying_a_record_twice_changes_nothing():
    agg = Aggregate()
    assert agg.apply(rec("a", 1, 0)) and not agg.apply(rec("a", 1, 0))
    assert agg.apply(rec("a", 1, 0, confirmed=0))  # its confirmation is another record
    assert not agg.apply(rec("a", 1, 0, confirmed=2))  # one confirmation per outcome
    assert agg.outcomes == 1 and agg.sites["a"].confirmations == 1


def test_release_needs_k_outcomes_from_m_sites():
    agg = Aggregate()
    for i in range(9):
        agg.apply(rec("a", i, 0))
    assert not agg.released(5, 2)  # 9 outcomes, one site
    agg.apply(rec("b", 0, 0))
    assert agg.released(5, 2) and not agg.released(11, 2) and not agg.released(5, 3)


def test_combine_shares_confirmations_and_models():
    agg = Aggregate()
    for i in range(6):
        agg.apply(rec("a", i, 0 if i < 4 else 2, model=3))
    for i in range(4):
        agg.apply(rec("b", i, 0, model=2))
    agg.apply(rec("a", 0, 0, model=3, confirmed=0))  # right
    agg.apply(rec("a", 4, 2, model=3, confirmed=0))  # wrong
    agg.apply(rec("b", 0, 0, model=2, confirmed=0))  # right
    answer = combine([agg.wire()], cap=100)
    assert (answer.outcomes, answer.sites) == (10, 2)
    assert answer.labels == [[0, round(255 * 8 / 10)], [2, round(255 * 2 / 10)]]
    assert answer.confirmed == [3, round(255 * 2 / 3)]
    assert sorted(answer.models) == [[2, 1, 255], [3, 2, 128]]


def test_an_outcome_in_several_buckets_votes_once_per_bucket():
    a, b = Aggregate(), Aggregate()
    for agg in (a, b):
        agg.apply(rec("a", 1, 4))
    b.apply(rec("b", 1, 0))
    answer = combine([a.wire(), b.wire()], cap=100)
    assert answer.labels == [[4, 170], [0, 85]] and answer.outcomes == 2 and answer.sites == 2


def test_one_site_flooding_moves_the_answer_by_at_most_its_capped_weight():
    honest = Aggregate()
    for s in range(4):
        for i in range(10):
            honest.apply(rec(f"site{s}", i, 0))
    before = combine([honest.wire()], cap=10).labels
    assert before == [[0, 255]]
    flooded = Aggregate.from_state(honest.state())
    for i in range(5000):
        flooded.apply(rec("hostile", i, 7))
    after = dict(map(tuple, combine([flooded.wire()], cap=10).labels))
    bound = 10 / (10 + 40)  # its capped weight over all weights
    assert after[7] <= round(255 * bound) and after[0] >= 255 - round(255 * bound)


def test_state_round_trip():
    agg = Aggregate()
    for i in range(5):
        agg.apply(rec("a", i, i % 2, conf=i))
    agg.apply(rec("a", 2, 0, confirmed=1))
    again = Aggregate.from_state(agg.state())
    assert again.wire() == agg.wire() and again.seen == agg.seen and not again.apply(rec("a", 3, 1))


def test_addresses_shards_and_probes():
    fingerprint = bytes(range(16))
    addrs = route.addresses(1, fingerprint, "full")
    assert [a.table for a in addrs] == list(range(8))
    assert [a.bucket for a in addrs] == fp.buckets(fingerprint, 8, 16)
    assert addrs[0].shard == route.Shard(1, 1, 0, addrs[0].bucket >> 4)
    probed = route.addresses(1, fingerprint, "full", probe=1)
    assert len(probed) == 8 * 9 and all(bin(p.bucket ^ addrs[p.table].bucket).count("1") <= 1 for p in probed)
    compact = route.addresses(1, bytes(fingerprint[i] for i in range(0, 8, 2)), "compact")
    assert compact == addrs[:4]  # a compact frame's addresses are the first four of the full one's
    with pytest.raises(route.UnknownSpec, match="domain 77"):
        route.addresses(77, fingerprint, "full")


def test_rendezvous_ownership_moves_about_one_shard_in_n():
    members = [f"gw-{i}" for i in range(10)]
    before = route.ownership(members, 2, [1])
    after = route.ownership(members + ["gw-new"], 2, [1])
    moved = sum(1 for s in before if before[s] != after[s])
    share = moved / len(before)
    assert 0.05 < share < 0.35  # R=2 of 11: a newcomer joins about 2/11 of the shards
    assert all(len(o) == 2 and len(set(o)) == 2 for o in after.values())
    left = route.ownership(members[1:], 2, [1])
    assert all(before[s] == left[s] for s in before if "gw-0" not in before[s])  # only gw-0's shards move
    rng = random.Random(1)
    assert route.owners(route.Shard(1, 1, 0, 3), rng.sample(members, 10), 2) == route.owners(
        route.Shard(1, 1, 0, 3), members, 2)  # order of the member list does not matter


def test_what_is_released_does_not_change_with_later_records():
    agg = Aggregate()
    agg.apply(rec("a", 1, 0))
    wire = agg.wire()
    for i in range(2, 6):
        agg.apply(rec("a", i, 3))
    assert wire == {"a": [1, {0: 1}, [0, 0, 0, 0, 0, 0, 1, 0], {3: {0: 1}}, 0, {}, {}]}
    assert sum(share for _, share in combine([wire], 20).labels) == 255
