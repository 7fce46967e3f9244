"""Where an outcome goes: addresses, shards, units and their owners (pure functions).

An address is (domain, spec version, table, bucket): the fingerprint spec of the frame's
domain (qis.edge.fingerprint) gives the version, and each of the frame's L tables gives a
bucket, the first ADDRESS_BITS bits of that table. Buckets group into shards by their
first SHARD_BITS bits, table by table. Unsplit, the owners of a shard are the top R live
members by rendezvous hashing (the highest sha256(member | shard)), so a membership change
moves only the shards whose top R changed (about 1/N of them); a large federation splits
hot shards into units and gives them owners with bounded loads (the plan, below).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from qis.edge import fingerprint as fp
from qis.edge.errors import ConfigError
from qis.edge.frame import PROFILES

SHARD_BITS = 4  # 16 shards per table
MAX_TABLES = max(p.fingerprint_tables for p in PROFILES.values())


class UnknownSpec(Exception):
    """A domain whose fingerprint spec this gateway does not know."""


@dataclass(frozen=True, order=True)
class Shard:
    domain: int
    version: int
    table: int
    index: int

    @property
    def key(self) -> str:
        return f"{self.domain}.{self.version}.{self.table}.{self.index}"


@dataclass(frozen=True, order=True)
class Address:
    domain: int
    version: int
    table: int
    bucket: int

    @property
    def shard(self) -> Shard:
        return Shard(self.domain, self.version, self.table, self.bucket >> (fp.ADDRESS_BITS - SHARD_BITS))

    @property
    def key(self) -> str:
        return f"{self.domain}.{self.version}.{self.table}.{self.bucket:02x}"


def spec_version(domain: int) -> int:
    try:
        return fp.spec(domain).version
    except ConfigError:
        raise UnknownSpec(f"no fingerprint spec for domain {domain}") from None


def addresses(domain: int, fingerprint: bytes, profile: str, probe: int = 0) -> list[Address]:
    """The addresses of a fingerprint of a profile; with probe 1 also every bucket at Hamming
    distance 1 (multi-probe: similar cases that fell just across one hyperplane)."""
    version = spec_version(domain)
    prof = PROFILES[profile]
    found = []
    for table, bucket in enumerate(fp.buckets(fingerprint, prof.fingerprint_tables, prof.fingerprint_bits)):
        found.append(Address(domain, version, table, bucket))
        if probe:
            found += [Address(domain, version, table, bucket ^ (1 << b)) for b in range(fp.ADDRESS_BITS)]
    return found


def all_shards(domain: int) -> list[Shard]:
    version = spec_version(domain)
    return [Shard(domain, version, t, i) for t in range(MAX_TABLES) for i in range(1 << SHARD_BITS)]


def _score(member: str, key: str) -> bytes:
    """A member's rendezvous score for a key: the highest scores own it."""
    return hashlib.sha256(f"{member}|{key}".encode()).digest()


def owners(shard: Shard, members: list[str], replicas: int) -> list[str]:
    """The top `replicas` members for shard by rendezvous hashing, best first."""
    return sorted(members, key=lambda m: _score(m, shard.key), reverse=True)[:replicas]


def ownership(members: list[str], replicas: int, domains: list[int]) -> dict[Shard, list[str]]:
    """Every shard of the given domains with its owners."""
    return {s: owners(s, members, replicas) for d in domains for s in all_shards(d)}


# ------------------------------------------------------------------ bounded loads
#
# Measured (docs/EVIDENCE.md, "Routing scale"): per-shard rendezvous cannot balance a
# federation of many gateways. There are only MAX_TABLES x 16 shards, and similar cases
# crowd together: on ECG5000 the most popular bucket of a table holds about half of its
# outcomes. The plan below is the scheme that meets max/mean load <= 1.25 in simulation:
# an address whose load is large is split into a power of two of parts by the hash of the
# outcome id (so an outcome and its confirmation land in the same part, and a site's
# tallies in several parts merge in synth.combine exactly as in one aggregate), and the
# parts are given owners by rendezvous with bounded loads: in decreasing order of load,
# each part takes the first `replicas` members in its rendezvous order whose load stays
# within c x the mean. Loads are what the previous period's streams held.
#
# What the federation runs (gateway.federation) is the shard-level form of the same plan:
# a hot shard, not an address, is split into at most MAX_PARTS parts by the outcome id's
# slot (SLOT_BITS bits, carried in the record's subject, so that a part is one wildcard
# subscription), and units (a shard, or a part of one) get owners by bounded_owners. With
# no loads, bounded_owners is rendezvous per shard: a federation smaller than the plan's
# `split_members` runs exactly that.


@dataclass(frozen=True, order=True)
class Part:
    """Part `index` of `parts` of an address: its outcomes whose id hashes to index."""

    address: Address
    index: int = 0
    parts: int = 1

    @property
    def key(self) -> str:
        return f"{self.address.key}.{self.index}/{self.parts}"


def part_of(outcome_id: bytes, parts: int) -> int:
    """The part (of `parts`) of an address that holds an outcome and its confirmation."""
    return int.from_bytes(hashlib.sha256(outcome_id).digest()[:4], "big") % parts


SLOT_BITS = 6
MAX_PARTS = 1 << SLOT_BITS  # a shard splits into at most this many parts


@dataclass(frozen=True, order=True)
class Unit:
    """What a member owns: a whole shard (parts 1), or the part `index` of `parts` of a
    shard: its records whose outcome id's slot is index modulo parts."""

    shard: Shard
    index: int = 0
    parts: int = 1

    @property
    def key(self) -> str:
        """The shard's key for a whole shard (so that, unsplit, owners are rendezvous per shard)."""
        return self.shard.key if self.parts == 1 else f"{self.shard.key}/{self.index}.{self.parts}"

    @property
    def subject_bits(self) -> str:
        """The slot bits (least significant first) every record of this unit has in its subject."""
        return "".join(f".{(self.index >> b) & 1}" for b in range(self.parts.bit_length() - 1))

    @property
    def filter_key(self) -> str:
        """The subjects of the unit's records, after "qis.rec.": its shard's, with the
        unit's slot bits, then any further bits (a NATS wildcard)."""
        bits = self.subject_bits
        return self.shard.key + bits + ("" if bits.count(".") == SLOT_BITS else ".>")

    def holds(self, outcome_id: bytes) -> bool:
        return part_of(outcome_id, self.parts) == self.index


def slot_bits(outcome_id: bytes) -> str:
    """The subject suffix of a record: its outcome id's slot, SLOT_BITS bits, least significant first."""
    slot = part_of(outcome_id, MAX_PARTS)
    return "".join(f".{(slot >> b) & 1}" for b in range(SLOT_BITS))


def units(shard: Shard, parts: dict[str, int]) -> list[Unit]:
    n = parts.get(shard.key, 1)
    return [Unit(shard, i, n) for i in range(n)]


def plan_loads(members: list[str], shard_loads: dict[str, float], replicas: int, domains: list[int],
               split_members: int, grain: float = 0.05) -> tuple[dict[str, int], dict[str, float]]:
    """(parts per split shard key, load per unit key) of a plan: hot shards split so that no
    part carries more than `grain` of a member's mean load; below split_members members,
    no split and no loads (rendezvous per shard)."""
    shards = [s for d in domains for s in all_shards(d)]
    if len(members) < split_members:
        return {}, {s.key: 0.0 for s in shards}
    split_parts = split({s.key: shard_loads.get(s.key, 0.0) for s in shards}, len(members), replicas, grain,
                        MAX_PARTS)
    parts = {k: n for k, n in split_parts.items() if n > 1}
    loads = {u.key: shard_loads.get(s.key, 0.0) / u.parts for s in shards for u in units(s, parts)}
    return parts, loads


def plan_owners(loads: dict[str, float], members: list[str], replicas: int, c: float = 1.1) -> dict[str, list[str]]:
    """Owners of every unit of a plan among the live members (bounded loads, c x the mean)."""
    return bounded_owners(loads, sorted(members), replicas, c)


def split(loads: dict[Address, float], members: int, replicas: int, grain: float = 0.1,
          max_parts: int = 1024) -> dict[Address, int]:
    """Parts per address (a power of two, at most max_parts) so that no part carries more
    than `grain` of a member's mean load (loads x replicas spread over `members`)."""
    total = sum(loads.values()) * replicas
    if total <= 0 or members < 1:
        return {a: 1 for a in loads}
    limit = grain * total / members
    out = {}
    for address, load in loads.items():
        parts = 1
        while parts < max_parts and load * replicas / parts > limit:
            parts *= 2
        out[address] = parts
    return out


def bounded_owners(loads: dict[str, float], members: list[str], replicas: int,
                   c: float = 1.25) -> dict[str, list[str]]:
    """Owners of each unit (key -> load) by rendezvous with bounded loads: no member ends
    above c x the mean load when that is possible (a unit that fits nowhere goes to the
    least loaded members). Deterministic: a pure function of its arguments."""
    if not members:
        return {key: [] for key in loads}
    replicas = min(replicas, len(members))
    cap = c * sum(loads.values()) * replicas / len(members)
    held = dict.fromkeys(members, 0.0)
    out: dict[str, list[str]] = {}
    for key, load in sorted(loads.items(), key=lambda kv: (-kv[1], kv[0])):
        order = sorted(members, key=lambda m: _score(m, key), reverse=True)
        chosen = [m for m in order if held[m] + load <= cap][:replicas]
        if len(chosen) < replicas:
            rest = sorted((m for m in order if m not in chosen), key=lambda m: held[m])
            chosen += rest[: replicas - len(chosen)]
        for m in chosen:
            held[m] += load
        out[key] = chosen
    return out
