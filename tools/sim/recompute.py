"""The federation's check: recompute every aggregate from the sites' own databases and
compare it with what the owners hold.

The expected aggregate of an address is what gateway.synth makes of every outcome and
confirmation of every site whose fingerprint falls there (the records each site's
forwarder builds, from its database); each address must be held, equal to that, by
exactly its owners (gateway.route.owners over the live members), and by no one else.
It uses the project's own record, routing and synthesis code: a separate
re-implementation could agree with itself and not with the gateways.
"""
from __future__ import annotations

import json

from qis.gateway import route
from qis.gateway.journal import Journal
from qis.gateway.records import record_from_row
from qis.gateway.sites import Site
from qis.gateway.synth import Aggregate, SiteTally


def expected(sites: list[tuple[Site, object]]) -> dict[str, dict]:
    """{address key: wire tallies} from (site, database path) pairs."""
    aggregates: dict[route.Address, Aggregate] = {}
    for site, db in sites:
        journal = Journal(db)
        try:
            for kind in ("outcomes", "confirmations"):
                after = 0
                while rows := journal.rows(kind, after, 1000):
                    for row in rows:
                        record = record_from_row(site, row)
                        for address in route.addresses(record.domain, record.fingerprint, record.profile):
                            aggregates.setdefault(address, Aggregate()).apply(record)
                    after = rows[-1][0]
        finally:
            journal.close()
    return {a.key: _jsonish(agg.wire()) for a, agg in aggregates.items()}


def compare(want: dict[str, dict], held: dict[str, dict[str, dict]], replicas: int) -> list[str]:
    """Problems (empty when all is well): held is {member: its /aggregates}. Every address
    is held whole by the owners of its shard (rendezvous: no shard is split below the
    federation's split_members); a federation that split shards holds parts, which
    compare_parts checks."""
    if any("/" in key for h in held.values() for key in h):
        return compare_parts(want, held)
    members = sorted(held)
    problems = []
    for key, wire in sorted(want.items()):
        d, v, t, b = key.split(".")
        address = route.Address(int(d), int(v), int(t), int(b, 16))
        owners = set(route.owners(address.shard, members, replicas))
        for member in members:
            got = held[member].get(key)
            if member in owners and got != wire:
                problems.append(f"{key}: owner {member} holds {_short(got)}, want {_short(wire)}")
            elif member not in owners and got is not None:
                problems.append(f"{key}: {member} holds it without owning shard {address.shard.key}")
    for member in members:
        for key in held[member]:
            if key not in want:
                problems.append(f"{key}: {member} holds an address no site's outcomes fall in")
    return problems


def compare_parts(want: dict[str, dict], held: dict[str, dict[str, dict]]) -> list[str]:
    """Problems when shards are split: the parts of each address, each as any member holds
    it (owners of one part hold the same), merged, must be the recomputed address."""
    parts: dict[str, dict[str, dict]] = {}
    for member in sorted(held):
        for key, wire in held[member].items():
            address, _, part = key.partition("/")
            got = parts.setdefault(address, {}).setdefault(part or "0.1", wire)
            if got != wire:
                return [f"{key}: {member} holds {_short(wire)}, another owner {_short(got)}"]
    problems = []
    for key, wire in sorted(want.items()):
        merged = _merge(list(parts.get(key, {}).values()))
        if merged != wire:
            problems.append(f"{key}: its parts hold {_short(merged)}, want {_short(wire)}")
    return problems + [f"{key}: held, but no site's outcomes fall in it" for key in parts if key not in want]


def _merge(wires: list[dict]) -> dict | None:
    """Site tallies of parts of one address added up, as one aggregate would hold them."""
    if not wires:
        return None
    total: dict[str, SiteTally] = {}
    for wire in wires:
        for site, w in wire.items():
            tally = SiteTally.from_wire(_intkeys(w))
            if site in total:
                total[site].merge(tally)
            else:
                total[site] = tally
    return {site: _jsonish(t.wire()) for site, t in sorted(total.items())}


def _intkeys(w: list) -> list:
    """A wire tally read back from JSON: its maps' keys are ints again."""
    def ik(d: dict) -> dict:
        return {int(k): v for k, v in d.items()}
    return [w[0], ik(w[1]), w[2], {int(m): ik(v) for m, v in w[3].items()}, w[4], ik(w[5]), ik(w[6])]


def _jsonish(value: object) -> object:
    """What the gateway's /aggregates JSON makes of a wire value (int keys become text)."""
    return json.loads(json.dumps(value))


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) < 120 else text[:117] + "..."
