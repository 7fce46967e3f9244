"""Bounded counts of refused input that did not authenticate (sans-IO).

Rules:
- Unauthenticated input (line noise, forgeries, strangers' frames, unknown key ids) is
  never stored row by row: it is counted per (port, code, detail), where code is the
  refusal's kind and detail narrows it where an operator needs that (the unknown key id,
  the device whose key failed).
- Memory and disk are bounded whatever arrives: at most ``max_details`` details per
  (port, code), the catch-all "other" included. When a new detail arrives and the set is
  full, the detail with the smallest count (the oldest on a tie) is folded into "other",
  so totals are kept, and a detail that comes back before ``max_details`` - 1 new ones
  have arrived (a misconfigured device's key id, retransmitting) outlives a flood of
  one-off ones.
- Sample frames for diagnosis: at most one per port every ``sample_interval_s``, into a
  ring of ``sample_slots`` per port.
- ``take()`` hands over what changed since the last call, for the store to write in the
  same transaction as the outcomes; ``restore()`` puts it back if that commit failed.
"""
from __future__ import annotations

from dataclasses import dataclass

OTHER = "other"


@dataclass
class Count:
    count: int
    first_at: float
    last_at: float


class RefusalLog:
    """In-memory refusal counts and samples, with the changes not yet written."""

    def __init__(self, max_details: int = 64, sample_slots: int = 16, sample_interval_s: float = 1.0) -> None:
        self.max_details = max_details
        self.sample_slots = sample_slots
        self.sample_interval_s = sample_interval_s
        self.counts: dict[tuple[str, str, str], Count] = {}
        self._details: dict[tuple[str, str], set[str]] = {}
        self._dirty: set[tuple[str, str, str]] = set()
        self._dropped: set[tuple[str, str, str]] = set()
        self._samples: list[tuple[str, int, float, str, bytes]] = []
        self._next_slot: dict[str, int] = {}
        self._last_sample: dict[str, float] = {}

    def load(self, rows: list[dict]) -> None:
        """Start from the counts a store already holds (its refusals() rows)."""
        for row in rows:
            key = (row["port"], row["code"], row["detail"])
            self.counts[key] = Count(row["count"], row["first_at"], row["last_at"])
            self._details.setdefault(key[:2], set()).add(key[2])

    def count(self, port: str, code: str, detail: str, frame: bytes | None, now: float) -> None:
        """Count one refusal; keep frame as a sample if this port's turn has come."""
        key = self._admit(port, code, detail or "")
        entry = self.counts.get(key)
        if entry is None:
            self.counts[key] = Count(1, now, now)
        else:
            entry.count += 1
            entry.last_at = now
        self._dirty.add(key)
        if frame and now - self._last_sample.get(port, float("-inf")) >= self.sample_interval_s:
            self._last_sample[port] = now
            slot = self._next_slot.get(port, 0)
            self._next_slot[port] = (slot + 1) % self.sample_slots
            self._samples.append((port, slot, now, code, bytes(frame[:1024])))

    def _admit(self, port: str, code: str, detail: str) -> tuple[str, str, str]:
        """The key to count under: detail itself, once room is made for it."""
        details = self._details.setdefault((port, code), set())
        if detail in details:
            return (port, code, detail)
        named = len(details) - (OTHER in details)
        if detail != OTHER and named >= self.max_details - 1:  # one place stays free for "other"
            victim = min((d for d in details if d != OTHER),
                         key=lambda d: (self.counts[(port, code, d)].count, self.counts[(port, code, d)].last_at))
            gone = self.counts.pop((port, code, victim))
            details.discard(victim)
            self._dirty.discard((port, code, victim))
            self._dropped.add((port, code, victim))
            other = self.counts.get((port, code, OTHER))
            if other is None:
                self.counts[(port, code, OTHER)] = gone
                details.add(OTHER)
            else:
                other.count += gone.count
                other.first_at = min(other.first_at, gone.first_at)
                other.last_at = max(other.last_at, gone.last_at)
            self._dirty.add((port, code, OTHER))
        details.add(detail)
        self._dropped.discard((port, code, detail))
        return (port, code, detail)

    def take(self) -> tuple[list[tuple], list[tuple], list[tuple]]:
        """(changed counts, dropped keys, new samples) since the last take(), for the store."""
        counts = [(*key, c.count, c.first_at, c.last_at) for key in self._dirty if (c := self.counts.get(key))]
        changes = (counts, sorted(self._dropped), self._samples)
        self._dirty, self._dropped, self._samples = set(), set(), []
        return changes

    def restore(self, changes: tuple[list[tuple], list[tuple], list[tuple]]) -> None:
        """Mark changes as unwritten again (their commit failed); they go with the next one."""
        counts, dropped, samples = changes
        self._dirty.update(row[:3] for row in counts if row[:3] in self.counts)
        self._dropped.update(key for key in dropped if key not in self.counts)
        # Keep the newest ring's worth per port: a commit that keeps failing cannot pile them up.
        self._samples = (samples + self._samples)[-self.sample_slots * max(1, len(self._next_slot)):]

    def top(self, code: str, n: int = 10) -> dict[str, int]:
        """The n details of code counted most often (over all ports), largest first."""
        merged: dict[str, int] = {}
        for (_, c, detail), entry in self.counts.items():
            if c == code:
                merged[detail] = merged.get(detail, 0) + entry.count
        return dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:n])

    def totals(self) -> dict[str, int]:
        """Refusals by code, over all ports and details."""
        out: dict[str, int] = {}
        for (_, code, _), c in self.counts.items():
            out[code] = out.get(code, 0) + c.count
        return out
