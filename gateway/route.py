"""Where an outcome goes: addresses, shards and their owners (pure functions).

An address is (domain, spec version, table, bucket): the fingerprint spec of the frame's
domain (qis.edge.fingerprint) gives the version, and each of the frame's L tables gives a
bucket, the first ADDRESS_BITS bits of that table. Buckets group into shards by their
first SHARD_BITS bits, table by table, and ownership is per shard: the owners of a shard
are the top R live members by rendezvous hashing (the highest sha256(member | shard)),
so a membership change moves only the shards whose top R changed (about 1/N of them).
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


def owners(shard: Shard, members: list[str], replicas: int) -> list[str]:
    """The top `replicas` members for shard by rendezvous hashing, best first."""
    def score(member: str) -> bytes:
        return hashlib.sha256(f"{member}|{shard.key}".encode()).digest()
    return sorted(members, key=score, reverse=True)[:replicas]


def ownership(members: list[str], replicas: int, domains: list[int]) -> dict[Shard, list[str]]:
    """Every shard of the given domains with its owners."""
    return {s: owners(s, members, replicas) for d in domains for s in all_shards(d)}
