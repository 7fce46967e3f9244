"""Routing, ownership and synthesis: what happens to an outcome after its ACK.

Rules:
- Forwarding: the forwarder reads the journal (committed outcomes and confirmations, in
  commit order) after its cursor, publishes each record once per table to its shard's
  subject (with the outcome id's slot bits) with a message id derived from the record, and moves the cursor only when the
  bus has confirmed every message up to it. After a crash it publishes again from the
  cursor; the bus drops what it already has. A dead bus never blocks a device: ACKs
  depend on the local commit only, and forwarding catches up when the bus returns.
- Ownership: a unit is a shard, or a part of a hot shard (its records whose outcome id's
  slot is the part's index modulo the parts). The plan (which shards split, and the load of
  every unit) is made by the first live member, from the stream's counts, every `plan_s`
  or when the members change, and kept in the bus; every member computes the same owners
  from it (gateway.route: bounded-load rendezvous, which without loads, below
  `split_members` members, is rendezvous per shard). Every `reconcile_s` this gateway
  starts reading newly owned units (from its snapshot's sequence, or from the start: the
  stream is the truth) and drops the others.
- An owner applies every verified record to the address of its subject's table;
  records that fail verification are refused with a reason and counted, and never touch
  an aggregate. Snapshots (aggregates and the stream sequence they reflect) are saved
  every `snapshot_s`.
- Answering: a query's addresses are asked of the owners of their units (every part of a
  split shard; this gateway answers its own at once); an owner releases only aggregates
  (of its part of an address) above the k/m thresholds; what arrived
  within `ask_timeout_s` is combined with capped site weights (gateway.synth). A query
  always gets an answer: TOO_FEW, UNKNOWN_SPEC, PARTIAL or UNAVAILABLE when it must.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass

from qis.edge import cbor as det_cbor
from qis.edge import frame as spec

from . import route
from .bus import BusUnavailable, LocalBus, NatsBus, reraise_if_cancelled
from .journal import Journal
from .records import (KIND_ASK, KIND_REPLY, VERSION, Record, Refused, open_record, open_signed, record_from_row,
                      seal_record, sign)
from .plan import Planner
from .refusals import RefusalLog
from .route import Address, Part, Unit
from .sites import PeerSite, Site
from .store import DatabaseError
from .synth import Aggregate, Answer, combine
from .verify import Query

log = logging.getLogger("qis.gateway.federation")
DOMAINS = [1]  # domains with a fingerprint spec (qis.edge.fingerprint.SPECS)


@dataclass
class Settings:
    """How a federation behaves; the defaults are the documented ones (docs/PROTOCOL.md)."""

    replicas: int = 2  # owners per shard
    k: int = 5  # an aggregate is released with at least k outcomes ...
    m: int = 2  # ... from at least m sites
    cap: int = 20  # a site's weight in an answer is capped at cap outcomes
    ask_timeout_s: float = 2.0
    reconcile_s: float = 1.0
    snapshot_s: float = 10.0
    forward_batch: int = 256
    plan_s: float = 30.0  # how often the first member re-plans from the stream's counts
    split_members: int = 8  # below this many members nothing splits (rendezvous per shard)


class Federation:
    """One gateway's part of the federation (or the whole of it, with a LocalBus)."""

    def __init__(self, site: Site, journal: Journal, bus: LocalBus | NatsBus, peers: dict[bytes, PeerSite],
                 settings: Settings | None = None) -> None:
        self.site = site
        self.journal = journal
        self.bus = bus
        self.peers = peers
        self.settings = settings or Settings()
        self.aggregates: dict[Part, Aggregate] = {}
        self.owned: dict[Unit, int] = {}  # unit -> last stream sequence applied
        s = self.settings
        self.planner = Planner(site, peers, DOMAINS, s.replicas, s.split_members, s.plan_s, self._refuse)
        self.members: list[str] = []
        self.stats: Counter[str] = Counter()
        self.refused = RefusalLog()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.last_error = ""
        self._seen_at: dict[Unit, int] = {}  # the sequence each unit had at its last progress check
        self._readers: dict[Unit, object] = {}  # the token of each unit's current subscription
        self._check_from = 0
        # A local federation rebuilds its aggregates from its own database at every start,
        # so its cursors live in memory; a NATS one keeps them in the database.
        self._cursors: dict[str, int] = {}

    @property
    def local(self) -> bool:
        return isinstance(self.bus, LocalBus)

    # ------------------------------------------------------------------ life cycle

    async def start(self, background: bool = True) -> None:
        """Connect, and (background) start forwarding, reconciling and snapshotting; a
        test drives forward_once() and reconcile() itself instead."""
        await self.bus.start()
        await self.bus.serve(self._serve_ask)
        if background:
            self._tasks = [asyncio.create_task(self._forward_loop()), asyncio.create_task(self._reconcile_loop()),
                           asyncio.create_task(self._snapshot_loop())]
        if self.local:
            await self.reconcile()

    def wake(self) -> None:
        """New commits: forward them now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # A library that turns a cancellation into its own timeout error could keep a
            # loop alive: stopping never waits on that for more than a few seconds.
            await asyncio.wait(self._tasks, timeout=3)
        try:
            await self._save_snapshots()
        except DatabaseError as exc:
            log.warning("snapshots not saved at stop: %s", exc)
        await self.bus.close()

    # ------------------------------------------------------------------ forwarding

    async def _forward_loop(self) -> None:
        while True:
            try:
                moved = await self.forward_once()
            except BusUnavailable as exc:
                reraise_if_cancelled(exc)
                log.info("forwarding paused: %s", exc)
                self.stats["forward_pauses"] += 1
                self.last_error = str(exc)
                moved = 0
                await asyncio.sleep(1.0)
            except Exception as exc:  # noqa: BLE001 - a bug must not end forwarding for good
                reraise_if_cancelled(exc)
                log.exception("forwarding failed; retrying in 1 s")
                self.stats["forward_errors"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                moved = 0
                await asyncio.sleep(1.0)
            if not moved:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    pass

    async def forward_once(self) -> int:
        """Publish the next batch of each journal and move the cursors; the rows moved."""
        moved = 0
        for kind in ("outcomes", "confirmations"):
            after = self.cursor(kind)
            rows = self.journal.rows(kind, after, self.settings.forward_batch)
            if not rows:
                continue
            await asyncio.gather(*(self._publish(record_from_row(self.site, row)) for row in rows))
            if self.local:
                self._cursors[kind] = rows[-1][0]
            else:
                await self._journal_write(self.journal.set_cursor, kind, rows[-1][0])
            self.stats[f"{kind}_forwarded"] += len(rows)
            moved += len(rows)
        return moved

    async def _journal_write(self, write, *args, tries: int = 200) -> None:
        """A journal write, retried while the core's transaction holds the database (see
        gateway.store.Journal): each try yields to the loop, which lets the core commit."""
        for attempt in range(tries):
            try:
                return write(*args)
            except DatabaseError:
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(0.01)

    def cursor(self, kind: str) -> int:
        return self._cursors.get(kind, 0) if self.local else self.journal.cursor(kind)

    async def _publish(self, record: Record) -> None:
        if self.local:  # in process: the record never leaves this gateway, nothing to sign or verify
            for address in route.addresses(record.domain, record.fingerprint, record.profile):
                if self.aggregates.setdefault(Part(address), Aggregate()).apply(record):
                    self.stats["records_applied"] += 1
            return
        data = seal_record(self.site, record)
        prof = spec.PROFILES[record.profile]
        slot = route.slot_bits(record.outcome_id)
        for address in route.addresses(record.domain, record.fingerprint, record.profile)[: prof.fingerprint_tables]:
            await self.bus.publish(address.shard.key + slot, data, f"{record.msg_id}.{address.table}")
            self.stats["messages_published"] += 1
            self.stats["bytes_published"] += len(data)

    # ------------------------------------------------------------------ ownership

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_s)
            try:
                await self.reconcile()
            except BusUnavailable as exc:
                reraise_if_cancelled(exc)
                log.info("ownership not reconciled: %s", exc)
            except Exception as exc:  # noqa: BLE001 - keep reconciling
                reraise_if_cancelled(exc)
                log.exception("reconciling ownership failed")
                self.last_error = f"{type(exc).__name__}: {exc}"

    async def reconcile(self) -> None:
        members = await self.bus.members()
        if not members:
            return  # no membership known (the bus is down): keep what is owned
        self.members = members
        await self.planner.follow(self.bus, members)
        owners = self.planner.owners
        mine = {u for d in DOMAINS for shard in route.all_shards(d) for u in route.units(shard, self.planner.parts)
                if self.bus.member in owners.get(u.key, ())}
        for unit in [u for u in self.owned if u not in mine]:
            self._readers.pop(unit, None)  # what its subscription still delivers is ignored
            await self.bus.unsubscribe(unit.key)
            await self._save_snapshots([unit])
            del self.owned[unit]
            for part in [p for p in self.aggregates if _unit_of(p) == unit]:
                del self.aggregates[part]
            self.stats["units_dropped"] += 1
        snapshots = self.journal.snapshots()
        for unit in sorted(mine - set(self.owned)):
            seq = self._restore(unit, snapshots.get(unit.key))
            self.owned[unit] = seq
            await self.bus.subscribe(unit.key, unit.filter_key, seq + 1, self._applier(unit))
            self.stats["units_taken"] += 1
        if not self.local:
            await self._check_progress()

    async def _check_progress(self, per_round: int = 16) -> None:
        """Resubscribe owned units that lag their subjects and made no progress since the
        last look (their consumer died with its node); a few units per round."""
        units = sorted(self.owned)
        if not units:
            return
        start = self._check_from % len(units)
        for unit in (units[start:] + units[:start])[:per_round]:
            applied = self.owned[unit]
            if await self.bus.last_seq(unit.filter_key) > applied and self._seen_at.get(unit) == applied:
                log.warning("unit %s stalled at sequence %d; reading on from there", unit.key, applied)
                self._readers.pop(unit, None)
                await self.bus.unsubscribe(unit.key)
                await self.bus.subscribe(unit.key, unit.filter_key, applied + 1, self._applier(unit))
                self.stats["units_resumed"] += 1
            self._seen_at[unit] = applied
        self._check_from = start + per_round

    def _restore(self, unit: Unit, snapshot: tuple[int, bytes] | None) -> int:
        if snapshot is None or self.local:
            return 0
        seq, blob = snapshot
        for key, state in det_cbor.loads(blob).items():
            d, v, t, b = (int(x, 16) if i == 3 else int(x) for i, x in enumerate(key.split(".")))
            self.aggregates[Part(Address(d, v, t, b), unit.index, unit.parts)] = Aggregate.from_state(state)
        return seq

    def _applier(self, unit: Unit):
        """The message handler of one subscription to unit. Only the unit's current
        reader applies anything: a dropped or replaced subscription may still deliver
        messages in flight, and those must neither re-own the unit nor apply twice."""
        reader = object()
        self._readers[unit] = reader

        async def apply(seq: int, data: bytes) -> None:
            if self._readers.get(unit) is not reader:
                return
            if seq <= self.owned.get(unit, -1) and not self.local:
                return  # already in the snapshot
            self.owned[unit] = seq
            self.apply(unit, data)
        return apply

    def apply(self, unit: Unit, data: bytes) -> bool:
        """Verify one message of unit and apply it to the part of the address of its table."""
        shard = unit.shard
        try:
            record = open_record(data, self.peers)
            version = route.spec_version(record.domain)
        except Refused as r:
            self._refuse(r.code, r.reason, data)
            return False
        except route.UnknownSpec:
            self._refuse("spec", f"no fingerprint spec for domain {record.domain}", data)
            return False
        prof = spec.PROFILES[record.profile]
        if shard.table >= prof.fingerprint_tables or (record.domain, version) != (shard.domain, shard.version):
            self._refuse("address", f"record of {record.site} does not belong to shard {shard.key}", data)
            return False
        address = route.addresses(record.domain, record.fingerprint, record.profile)[shard.table]
        if address.shard != shard or not unit.holds(record.outcome_id):
            self._refuse("address", f"record of {record.site} does not belong to unit {unit.key}", data)
            return False
        if not self.aggregates.setdefault(Part(address, unit.index, unit.parts), Aggregate()).apply(record):
            self._refuse("replay", f"outcome {record.outcome_id.hex()} of {record.site} was already applied", data)
            return False
        self.stats["records_applied"] += 1
        return True

    def _refuse(self, code: str, reason: str, data: bytes) -> None:
        log.info("federation refused a message: %s", reason)
        self.stats["records_refused"] += 1
        self.refused.count("federation", code, "", data, time.time())

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.snapshot_s)
            try:
                await self._save_snapshots()
            except DatabaseError as exc:
                reraise_if_cancelled(exc)
                log.warning("snapshots not saved: %s", exc)

    async def _save_snapshots(self, units: list[Unit] | None = None) -> None:
        """Save the aggregates of units (default: all owned) with the stream sequence they
        reflect, in one transaction."""
        if self.local:
            return  # the local log is the database itself: rebuilt from it at start
        units = list(self.owned) if units is None else units
        states: dict[Unit, dict] = {u: {} for u in units}
        for part, agg in self.aggregates.items():
            unit = _unit_of(part)
            if unit in states:
                states[unit][part.address.key] = agg.state()
        rows = [(u.key, self.owned[u], det_cbor.dumps(state)) for u, state in states.items()]
        if rows:
            await self._journal_write(self.journal.save_snapshots, rows)

    # ------------------------------------------------------------------ answering

    def released(self, parts: list[Part]) -> list[dict | None]:
        """The wire tallies of each part of an address this gateway owns and may release,
        else None."""
        s = self.settings
        out = []
        for part in parts:
            agg = self.aggregates.get(part)
            out.append(agg.wire() if agg is not None and agg.released(s.k, s.m) else None)
        return out

    async def answer(self, query: Query) -> tuple[int, Answer]:
        """(status, answer) for a device's query."""
        try:
            addrs = route.addresses(query.domain, query.fingerprint, query.profile, query.probe)
        except route.UnknownSpec:
            return spec.UNKNOWN_SPEC, Answer()
        return await self.ask(addrs)

    async def ask(self, addrs: list[Address]) -> tuple[int, Answer]:
        """Ask the owners of addrs (of every part of a split shard) and combine what they release."""
        by_member: dict[str, list[Part]] = {}
        for a in addrs:
            for unit in route.units(a.shard, self.planner.parts):
                owners = self.planner.owners.get(unit.key) or route.owners(a.shard, self.members or [self.bus.member],
                                                                            self.settings.replicas)
                target = self.bus.member if self.bus.member in owners else (owners[0] if owners else None)
                if target is not None:
                    by_member.setdefault(target, []).append(Part(a, unit.index, unit.parts))
        wires: list[dict] = []
        missing = 0
        asks = {m: self._ask_member(m, a) for m, a in by_member.items()}
        results = await asyncio.gather(*asks.values(), return_exceptions=True)
        for member, result in zip(asks, results):
            if isinstance(result, BaseException):
                log.info("owner %s did not answer: %s", member, result)
                missing += 1
                continue
            wires += [w for w in result if w is not None]
        self.stats["queries_asked"] += 1
        if not wires:
            status = spec.UNAVAILABLE if by_member and missing == len(by_member) else spec.TOO_FEW
            return status, Answer()
        return (spec.PARTIAL if missing else spec.ANSWERED), combine(wires, self.settings.cap)

    async def _ask_member(self, member: str, parts: list[Part]) -> list[dict | None]:
        if member == self.bus.member:
            return self.released(parts)
        payload = [VERSION, KIND_ASK, [[p.address.domain, p.address.version, p.address.table, p.address.bucket,
                                        p.index, p.parts] for p in parts]]
        reply = await self.bus.request(member, sign(self.site, payload), self.settings.ask_timeout_s)
        try:
            peer, value = open_signed(reply, self.peers)
        except Refused as r:
            self._refuse(r.code, r.reason, reply)
            raise BusUnavailable(f"reply of {member} refused: {r.reason}") from None
        if peer.name != member or len(value) != 3 or value[1] != KIND_REPLY or not isinstance(value[2], list) \
                or len(value[2]) != len(parts):
            raise BusUnavailable(f"reply of {member} is not a reply to this question")
        return [w if isinstance(w, dict) else None for w in value[2]]

    async def _serve_ask(self, data: bytes) -> bytes:
        peer, value = open_signed(data, self.peers)  # Refused: no reply (the asker times out)
        if len(value) != 3 or value[1] != KIND_ASK or not isinstance(value[2], list) or len(value[2]) > 256:
            raise Refused("payload", f"a question of {peer.name} is malformed")
        parts = [Part(Address(*a[:4]), a[4], a[5]) for a in value[2] if isinstance(a, list) and len(a) == 6
                 and all(type(x) is int for x in a)]
        if len(parts) != len(value[2]):
            raise Refused("payload", f"a question of {peer.name} names something that is not a part of an address")
        self.stats["asks_served"] += 1
        return sign(self.site, [VERSION, KIND_REPLY, self.released(parts)])

    def summary(self) -> dict:
        return {**dict(self.stats), "member": self.bus.member, "members": self.members,
                "owned_units": len(self.owned), "split_shards": len(self.planner.parts),
                "plans_made": self.planner.made,
                "addresses": len({p.address for p in self.aggregates}),
                "cursor": {k: self.cursor(k) for k in ("outcomes", "confirmations")},
                "refused_by_code": self.refused.totals(), "bus_connected": getattr(self.bus, "connected", True),
                "last_error": self.last_error}


def _unit_of(part: Part) -> Unit:
    return Unit(part.address.shard, part.index, part.parts)
