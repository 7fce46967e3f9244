"""gateway.route's bounded-load plan (issue 13): hot addresses (the simulation's form) or
hot shards (what the federation runs) split by outcome id, units owned by rendezvous with
bounded loads. Pure functions."""
from __future__ import annotations

import hashlib
import random

from qis.gateway import route
from qis.gateway.bus import matches
from qis.gateway.records import KIND_CONFIRMATION, KIND_OUTCOME, Record
from qis.gateway.synth import Aggregate, combine

MEMBERS = [f"gw-{i}" for i in range(40)]


def test_owners_is_still_rendezvous_per_shard():
    shard = route.Shard(1, 1, 3, 7)
    def score(m):
        return hashlib.sha256(f"{m}|{shard.key}".encode()).digest()
    assert route.owners(shard, MEMBERS, 2) == sorted(MEMBERS, key=score, reverse=True)[:2]


def test_bounded_owners_meets_the_bound_and_is_deterministic():
    rnd = random.Random(1)
    loads = {f"u{i}": rnd.random() for i in range(800)}
    plan = route.bounded_owners(loads, MEMBERS, 2, 1.25)
    assert plan == route.bounded_owners(dict(reversed(list(loads.items()))), list(reversed(MEMBERS)), 2, 1.25)
    held = dict.fromkeys(MEMBERS, 0.0)
    for key, owners in plan.items():
        assert len(set(owners)) == 2 and set(owners) <= set(MEMBERS)
        for m in owners:
            held[m] += loads[key]
    mean = sum(held.values()) / len(held)
    assert max(held.values()) <= 1.25 * mean + 1e-9


def test_bounded_owners_prefers_the_rendezvous_order_when_loads_allow():
    loads = {f"u{i}": 1.0 for i in range(10)}
    plan = route.bounded_owners(loads, MEMBERS, 1, c=100.0)  # no bound in effect
    for key, owners in plan.items():
        assert owners == sorted(MEMBERS, key=lambda m: route._score(m, key), reverse=True)[:1]


def test_a_unit_too_big_for_any_member_still_gets_owners():
    plan = route.bounded_owners({"huge": 100.0, "a": 1.0, "b": 0.0}, MEMBERS[:3], 2, 1.25)
    assert all(len(o) == 2 for o in plan.values())


def test_split_gives_powers_of_two_below_the_grain():
    a = [route.Address(1, 1, 0, b) for b in range(6)]
    loads = dict(zip(a, [1000.0, 300.0, 10.0, 1.0, 0.0, 50.0]))
    parts = route.split(loads, 20, 2, grain=0.1)
    limit = 0.1 * sum(loads.values()) * 2 / 20
    for address, n in parts.items():
        assert n & (n - 1) == 0
        assert loads[address] * 2 / n <= limit
    assert parts[a[0]] > parts[a[1]] > parts[a[2]] > parts[a[3]] == parts[a[4]] == 1
    assert route.split(loads, 20, 2, grain=0.001, max_parts=8)[a[0]] == 8


def _rec(site, i, label, confirmed=None):
    oid = hashlib.sha256(f"{site}{i}".encode()).digest()[:16]
    return Record(KIND_OUTCOME if confirmed is None else KIND_CONFIRMATION, oid, site, bytes(8), 1, 2, label, 3,
                  "full", bytes(16), 1, confirmed)


def test_parts_combine_to_the_whole_address_and_keep_confirmations_with_outcomes():
    """Splitting by outcome id loses nothing: a site's tallies over the parts merge in
    synth.combine into what one aggregate of the whole address gives."""
    rnd = random.Random(2)
    records = []
    for s in range(6):
        for i in range(rnd.randint(3, 40)):
            label = rnd.randint(0, 3)
            records.append(_rec(f"site-{s}", i, label))
            if rnd.random() < 0.4:
                records.append(_rec(f"site-{s}", i, label, rnd.randint(0, 3)))
    whole = Aggregate()
    parts = [Aggregate() for _ in range(4)]
    for r in records:
        whole.apply(r)
        parts[route.part_of(r.outcome_id, 4)].apply(r)
    for part in parts:  # every confirmation met its outcome in the same part
        assert all(t.confirmations <= t.outcomes for t in part.sites.values())
    one, split_answer = combine([whole.wire()], 20), combine([p.wire() for p in parts], 20)
    assert split_answer.labels == one.labels and split_answer.models[0][2] == one.models[0][2]
    assert split_answer.sites == one.sites


def test_a_plan_without_loads_is_rendezvous_per_shard():
    parts, loads = route.plan_loads(MEMBERS, {"1.1.0.3": 500.0}, 2, [1], split_members=len(MEMBERS) + 1)
    assert parts == {} and set(loads.values()) == {0.0}
    owners = route.plan_owners(loads, MEMBERS, 2)
    assert all(owners[s.key] == o for s, o in route.ownership(MEMBERS, 2, [1]).items())


def test_a_hot_shard_splits_into_units_that_take_its_records_by_outcome_id():
    counts = {s.key: 1.0 for s in route.all_shards(1)}
    counts["1.1.2.5"] = 4000.0  # one hot shard, as similar beats crowd together
    parts, loads = route.plan_loads(MEMBERS, counts, 2, [1], split_members=8)
    assert set(parts) == {"1.1.2.5"} and 2 <= parts["1.1.2.5"] <= route.MAX_PARTS
    hot = route.Shard(1, 1, 2, 5)
    units = route.units(hot, parts)
    assert [u.index for u in units] == list(range(parts["1.1.2.5"]))
    assert sum(loads[u.key] for u in units) == 4000.0
    owners = route.plan_owners(loads, MEMBERS, 2)
    assert set(owners) == set(loads) and all(len(set(o)) == 2 for o in owners.values())
    for n in (1, 2, 8, route.MAX_PARTS):  # whatever the split, a record's subject is one unit's: the one holding it
        split_units = route.units(hot, {hot.key: n} if n > 1 else {})
        for i in range(100):
            oid = hashlib.sha256(b"%d" % i).digest()[:16]
            subject = hot.key + route.slot_bits(oid)
            holders = [u for u in split_units if matches(u.filter_key, subject)]
            assert holders == [u for u in split_units if u.holds(oid)] and len(holders) == 1, (n, i)
