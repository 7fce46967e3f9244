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
from qis.gateway.synth import Aggregate


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
    """Problems (empty when all is well): held is {member: its /aggregates}."""
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


def _jsonish(value: object) -> object:
    """What the gateway's /aggregates JSON makes of a wire value (int keys become text)."""
    return json.loads(json.dumps(value))


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) < 120 else text[:117] + "..."
