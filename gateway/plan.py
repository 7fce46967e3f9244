"""The ownership plan a federation member follows (docs/PROTOCOL.md, "Owners").

Rules:
- The first live member (by name) makes the plan: when none is in the bus, when the members
  changed, or every plan_s. From split_members members on it is made from the stream's
  records per shard (gateway.route.plan_loads: hot shards split into parts); below, it has
  no loads, and its owners are rendezvous per shard.
- The plan is signed by its maker (a federation site, the plan's first member) and kept in
  the bus. A member verifies it before it reads it; a plan that does not verify, or is
  malformed, is refused and counted, and the member keeps rendezvous per shard.
- Every member computes the owners from the plan and the live members with the same pure
  function (gateway.route.plan_owners), so they agree without talking.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from . import route
from .records import KIND_PLAN, VERSION, Refused, open_signed, sign
from .sites import PeerSite, Site


class Planner:
    """This member's view of the plan: `parts` (split shard key -> parts) and `owners`
    (unit key -> members)."""

    def __init__(self, site: Site, peers: dict[bytes, PeerSite], domains: list[int], replicas: int,
                 split_members: int, plan_s: float, refuse: Callable[[str, str, bytes], None]) -> None:
        self.site, self.peers, self.domains, self.replicas = site, peers, domains, replicas
        self.split_members, self.plan_s, self.refuse = split_members, plan_s, refuse
        self.plan: dict = {"members": [], "parts": {}, "loads": {}, "t": 0}
        self.owners: dict[str, list[str]] = {}
        self.made = 0
        self._basis: tuple | None = None  # (plan, members) the owners were computed from

    @property
    def parts(self) -> dict[str, int]:
        return self.plan["parts"]

    async def follow(self, bus, members: list[str]) -> None:
        """Read the bus's plan (making a new one if this member is the first), and the owners."""
        plan = self.open(await bus.get_plan())
        if members[0] == bus.member and (plan is None or plan["members"] != members
                                         or time.time() - plan["t"] >= self.plan_s):
            loads = await bus.subject_loads() if len(members) >= self.split_members else {}
            parts, unit_loads = route.plan_loads(members, loads, self.replicas, self.domains, self.split_members)
            plan = {"members": members, "parts": parts, "loads": {k: round(v) for k, v in unit_loads.items()},
                    "t": int(time.time())}
            await bus.put_plan(sign(self.site, [VERSION, KIND_PLAN, members, parts, plan["loads"], plan["t"]]))
            self.made += 1
        if plan is None:  # no plan yet: rendezvous per shard, which a plan without loads is
            plan = {"members": members, "parts": {}, "t": 0,
                    "loads": route.plan_loads(members, {}, self.replicas, self.domains, len(members) + 1)[1]}
        if self._basis != (plan, members):
            self.owners = route.plan_owners(plan["loads"], members, self.replicas)
            self._basis = (plan, members)
        self.plan = plan

    def open(self, raw: bytes | None) -> dict | None:
        """The plan in the bus, if a federation site signed it and it is well formed."""
        if raw is None:
            return None
        try:
            peer, value = open_signed(raw, self.peers)
        except Refused as r:
            self.refuse(r.code, f"plan: {r.reason}", raw)
            return None
        if (len(value) != 6 or value[1] != KIND_PLAN or not isinstance(value[2], list) or not value[2]
                or peer.name != value[2][0] or not isinstance(value[3], dict) or not isinstance(value[4], dict)
                or type(value[5]) is not int
                or not all(type(n) is int and 2 <= n <= route.MAX_PARTS and n & (n - 1) == 0
                           for n in value[3].values())
                or not all(type(n) is int and n >= 0 for n in value[4].values())):
            self.refuse("payload", f"the plan in the bus (signed by {peer.name}) is malformed", raw)
            return None
        return {"members": value[2], "parts": value[3], "loads": value[4], "t": value[5]}
