"""The federation on one clinic (gateway.federation with the in-process bus) on a real
database: forwarding from the journal, aggregates, answers, and bad federation input.
The same code on a real NATS cluster: tests/e2e/test_federation.py."""
from __future__ import annotations

import asyncio

import pytest

from qis.edge import frame as spec
from qis.gateway import route
from qis.gateway.bus import LocalBus
from qis.gateway.core import GatewayCore
from qis.gateway.federation import Federation, Settings
from qis.gateway.journal import Journal
from qis.gateway.records import Record, seal_record, sign
from qis.gateway.sites import PeerSite, provision_site
from qis.gateway.verify import Query


@pytest.fixture
def site(tmp_path):
    return provision_site("clinic-a", tmp_path / "a.site")


def federation(store, site, **settings) -> Federation:
    peers = {site.kid: PeerSite(site.name, site.private.public_key())}
    return Federation(site, Journal(store.path), LocalBus(site.name), peers, Settings(m=1, **settings))


def store_outcomes(core: GatewayCore, frames, device: str, counters, fp: bytes, label: int = 3) -> None:
    d = frames.devices[device]
    for c in counters:
        pt = spec.encode_outcome(spec.FULL, frames.TIME, 3, 1, label, 200, fp, [[label, 200]])
        core.receive("p", frames.seal(d.key, d.kid, c, bytes(pt)))
    core.flush()


def query(fp: bytes, domain: int = 1) -> Query:
    return Query("dev-a", b"\x00" * 4, 999, "full", 0, 3, domain, 0, fp)


def run(coro):
    return asyncio.run(coro)


def test_committed_outcomes_are_forwarded_synthesized_and_answered(registry, store, frames, site):
    core = GatewayCore(registry, store)
    fp = bytes(range(16))
    store_outcomes(core, frames, "dev-a", range(4), fp, label=1)
    store_outcomes(core, frames, "dev-b", range(3), fp, label=4)

    async def scenario():
        fed = federation(store, site, k=5)
        await fed.start(background=False)
        assert await fed.forward_once() == 7
        assert fed.stats["records_applied"] == 7 * 8  # every table's address
        status, answer = await fed.answer(query(fp))
        assert status == spec.ANSWERED and (answer.outcomes, answer.sites) == (7, 1)
        assert answer.labels == [[1, round(255 * 4 / 7)], [4, round(255 * 3 / 7)]]
        status, _ = await fed.answer(query(bytes(reversed(range(16)))))
        assert status == spec.TOO_FEW  # nothing similar stored
        assert (await fed.answer(query(fp, domain=99)))[0] == spec.UNKNOWN_SPEC
        store.confirm("dev-a", 0, 1)  # a clinician confirms one conclusion, corrects another
        store.confirm("dev-b", 0, 1)
        assert await fed.forward_once() == 2
        _, answer = await fed.answer(query(fp))
        assert answer.confirmed == [2, round(255 * 1 / 2)] and answer.models == [[3, 2, 128]]
        await fed.stop()

    run(scenario())


def test_below_k_outcomes_nothing_is_released(registry, store, frames, site):
    core = GatewayCore(registry, store)
    fp = bytes(range(16))
    store_outcomes(core, frames, "dev-a", range(4), fp)

    async def scenario():
        fed = federation(store, site, k=5)
        await fed.start(background=False)
        await fed.forward_once()
        addrs = route.addresses(1, fp, "full")
        assert fed.released([route.Part(a) for a in addrs]) == [None] * 8  # 4 outcomes each: below k
        assert (await fed.ask(addrs))[0] == spec.TOO_FEW
        await fed.stop()

    run(scenario())


def test_bad_federation_input_is_refused_counted_and_leaves_aggregates_alone(registry, store, frames, site, tmp_path):
    core = GatewayCore(registry, store)
    fp = bytes(range(16))
    store_outcomes(core, frames, "dev-a", range(6), fp)

    async def scenario():
        fed = federation(store, site, k=1)
        await fed.start(background=False)
        await fed.forward_once()
        before = {a: agg.wire() for a, agg in fed.aggregates.items()}
        good = Record(1, bytes(16), site.name, b"p" * 8, 1, 3, 2, 6, "full", fp, 1, None)
        unit = route.Unit(route.addresses(1, fp, "full")[0].shard)
        stranger = provision_site("stranger", tmp_path / "s.site")
        data = bytearray(seal_record(site, good))
        data[-1] ^= 1
        cases = {
            "signature": bytes(data),
            "unknown-site": seal_record(stranger, Record(1, bytes(16), "stranger", b"p" * 8, 1, 3, 2, 6, "full", fp,
                                                         1, None)),
            "size": sign(site, [1, 1, b"x" * 700]),
            "spec": seal_record(site, Record(1, bytes(16), site.name, b"p" * 8, 99, 3, 2, 6, "full", fp, 1, None)),
            "address": seal_record(site, Record(1, bytes(16), site.name, b"p" * 8, 1, 3, 2, 6, "full",
                                                bytes(255 - b for b in fp), 1, None)),
        }
        for code, message in cases.items():
            assert not fed.apply(unit, message), code
        # A replayed outcome id: the first time it counts, the second it is refused.
        assert fed.apply(unit, seal_record(site, good))
        after_one = {a: agg.wire() for a, agg in fed.aggregates.items()}
        assert not fed.apply(unit, seal_record(site, good))
        assert {a: agg.wire() for a, agg in fed.aggregates.items()} == after_one
        assert fed.refused.totals() == {"signature": 1, "unknown-site": 1, "size": 1, "spec": 1, "address": 1,
                                        "replay": 1}
        changed = [a for a in after_one if before.get(a) != after_one[a]]
        assert changed == [route.Part(route.addresses(1, fp, "full")[0])]  # only the good record's one address moved
        # A part of a split shard takes only the records whose outcome id is in it.
        other = route.Unit(unit.shard, 1 - route.part_of(bytes(range(1, 17)), 2), 2)
        elsewhere = Record(1, bytes(range(1, 17)), site.name, b"p" * 8, 1, 3, 2, 6, "full", fp, 1, None)
        assert not fed.apply(other, seal_record(site, elsewhere))
        assert fed.refused.totals()["address"] == 2
        await fed.stop()

    run(scenario())


def test_the_forwarder_moves_its_cursor_only_over_what_the_bus_confirmed(registry, store, frames, site):
    """A bus of this layer's own (a fake is fine inside a unit test): down, then up."""
    from qis.gateway.bus import BusUnavailable

    core = GatewayCore(registry, store)
    store_outcomes(core, frames, "dev-a", range(5), bytes(range(16)))

    class Bus:
        member = site.name
        down = True
        published: list[str] = []

        async def publish(self, shard_key, data, msg_id):
            if self.down:
                raise BusUnavailable("the cluster is down")
            self.published.append(msg_id)

    async def scenario():
        peers = {site.kid: PeerSite(site.name, site.private.public_key())}
        bus = Bus()
        fed = Federation(site, Journal(store.path), bus, peers, Settings(m=1))
        with pytest.raises(BusUnavailable):
            await fed.forward_once()
        assert fed.cursor("outcomes") == 0  # nothing confirmed: the cursor stays
        bus.down = False
        assert await fed.forward_once() == 5 and fed.cursor("outcomes") == 5
        assert len(bus.published) == 5 * 8 and len(set(bus.published)) == 40  # one message id per record and table
        assert await fed.forward_once() == 0  # nothing new

    run(scenario())
