"""The gateway's protocol engine, sans-IO: whole frames in per port; ACK frames, the
outcomes each commit made durable and the queries it claimed out; answers in, answer
frames out.

Rules:
- ``receive(port, frame)`` verifies one frame and writes the result into the store's
  open transaction; it never raises on input. Links own their framing: a link that
  carries a byte stream decodes it and reports what was not a frame with ``refuse()``.
- ``flush()`` commits, and only then releases the ACKs for what the commit made durable,
  with the outcomes it stored (the hook routing and synthesis hang on). If a write or
  the commit fails (disk full, read-only database), the transaction is rolled back and
  its ACKs and outcomes are dropped: the devices keep those frames and retransmit.
- A frame that authenticated but was refused is acknowledged once it is durably in the
  dead-letter table (re-sending it cannot help); an unauthenticated one never is, and is
  only counted (gateway.refusals), so a stranger cannot make the gateway store anything.
- A query claims its (device, counter) like an outcome. ``flush()`` hands new queries
  over once that claim is durable; ``answer()`` seals and stores the answer, which the next
  flush releases. A repeated query gets the stored answer again (the same bytes: one
  downlink message per nonce); one not answered yet gets nothing until it is.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from qis.edge.frame import PROFILES

from .keys import DeviceKey
from .refusals import RefusalLog
from .store import DatabaseError, OutcomeStore
from .verify import Outcome, Query, Rejected, open_uplink, seal_ack, seal_answer

log = logging.getLogger("qis.gateway")


@dataclass
class Flushed:
    """What one commit made durable: ACKs to send, per port, and the outcomes it stored.

    ``acked`` names what each ACK acknowledges, in the same order as ``acks``: (port,
    device, counter). A link that addresses devices (MQTT topics) or acknowledges several
    counters in one downlink (LoRa multi-ACKs) builds its downlinks from it."""

    acks: list[tuple[str, bytes]] = field(default_factory=list)
    committed: list[Outcome] = field(default_factory=list)
    queries: list[tuple[str, Query]] = field(default_factory=list)  # (port, query) to answer
    answers: list[tuple[str, str, bytes]] = field(default_factory=list)  # (port, device, answer frame)
    # (port, the device key that sealed the frame, counter) of each ACK: a link that batches
    # counters (LoRa's multi-ACK) seals under the same key, so a rotated device can open it.
    acked: list[tuple[str, DeviceKey, int]] = field(default_factory=list)


class GatewayCore:
    """Verification, durable storage and acknowledgement of the frames of every port."""

    def __init__(self, registry: dict[bytes, DeviceKey], store: OutcomeStore,
                 refusals: RefusalLog | None = None, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.store = store
        self.refusals = refusals or RefusalLog()
        self.refusals.load(store.refusals())
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self._pending = Flushed()  # what the open transaction will release
        self._uncommitted: Counter[str] = Counter()  # stats of the open transaction
        self._failed = False  # a write failed in this transaction: nothing in it is acknowledged
        self._writes = 0  # store writes in the open transaction
        self._refusals_saved_at = float("-inf")

    def receive(self, port: str, frame: bytes) -> None:
        """Handle one whole frame that arrived on port."""
        self.stats["frames_received"] += 1
        try:
            opened = open_uplink(frame, self.registry, self.clock())
        except Rejected as r:
            self.stats["rejected"] += 1
            if not r.authenticated:
                self.refusals.count(port, r.code, r.detail, frame, self.clock())
                return
            log.info("dead letter from %s: %s", port, r.reason)
            disposition = self._write(self.store.dead_letter, r.reason, frame, port, r.device, r.counter, True)
            self._settle(port, self.registry[r.kid], r.counter, frame, disposition)
            return
        except Exception:  # a bug, not an input: keep serving the other frames and ports
            log.exception("internal error on a frame from %s; counted as refused", port)
            self.refusals.count(port, "internal", "", frame, self.clock())
            return
        if isinstance(opened, Query):
            self._query(port, opened, frame)
            return
        disposition = self._write(self.store.add, opened, frame, port)
        if disposition == "stored":
            self._uncommitted["stored"] += 1
            self._pending.committed.append(opened)
        self._settle(port, self.registry[opened.kid], opened.counter, frame, disposition)

    def _query(self, port: str, query: Query, frame: bytes) -> None:
        disposition = self._write(self.store.add_query, query, frame, port)
        if disposition == "stored":
            self._uncommitted["queries"] += 1
            self._pending.queries.append((port, query))
        elif disposition == "duplicate":
            stored = self.store.answer_of(query.device, query.counter)
            if stored is not None:
                self._pending.answers.append((port, query.device, stored))
        elif disposition == "conflict":
            self._settle(port, self.registry[query.kid], query.counter, frame, disposition)

    def answer(self, port: str, query: Query, status: int, outcomes: int = 0, sites: int = 0,
               labels: list | None = None, confirmed: list | None = None, models: list | None = None) -> None:
        """Seal and store the answer to a query; the next flush sends it on port."""
        frame = seal_answer(self.registry[query.kid], query.counter, PROFILES[query.profile], status, outcomes, sites,
                            labels or [], confirmed or [0, 0], models or [])
        if self._write(self.store.save_answer, query.device, query.counter, frame, status):
            self._uncommitted["answers"] += 1
            self._pending.answers.append((port, query.device, frame))

    def refuse(self, port: str, code: str, detail: str) -> None:
        """Count something a link received that was not a frame (line noise, a bad record)."""
        self.stats[f"{code}_errors"] += 1
        self.refusals.count(port, code, detail, None, self.clock())

    def _settle(self, port: str, key: DeviceKey, counter: int, frame: bytes, disposition: str | None) -> None:
        """ACK an authenticated frame once it is recorded, under the key that sealed it; a
        counter reused with other bytes is refused."""
        if disposition == "conflict":
            reason = f"replayed counter {counter} of {key.device} with different content (nonce reuse or stolen key)"
            log.warning("dead letter from %s: %s", port, reason)
            self._write(self.store.dead_letter, reason, frame, port, key.device, counter)
        elif disposition:
            if disposition == "duplicate":
                self._uncommitted["duplicate"] += 1
            self._pending.acks.append((port, seal_ack(key, counter)))
            self._pending.acked.append((port, key, counter))

    def _write(self, method, *args):
        """Run one store write; on a database error, fail the whole open transaction."""
        if self._failed:
            return None
        self._writes += 1
        try:
            return method(*args)
        except DatabaseError as exc:
            log.error("store write failed, nothing in this batch will be acknowledged: %s", exc)
            self._failed = True
            return None

    def flush(self) -> Flushed:
        """Commit what was received; return the ACKs and outcomes the commit made durable.

        Refusal counts are written with the commit, or on their own at most once a second
        (a flood of garbage costs no fsync per read); ``close()`` writes what is left."""
        done, self._pending = self._pending, Flushed()
        stats, self._uncommitted = self._uncommitted, Counter()
        writes, self._writes = self._writes, 0
        now = self.clock()
        save_refusals = writes > 0 or now - self._refusals_saved_at >= 1.0
        refusals = self.refusals.take() if save_refusals else ([], [], [])
        try:
            if self._failed:
                raise DatabaseError("a write failed")
            if any(refusals):
                self.store.save_refusals(*refusals)
                self._refusals_saved_at = now
            self.store.commit()
        except DatabaseError as exc:
            self.store.rollback()
            self.refusals.restore(refusals)
            self.stats["commit_failures"] += 1
            self.stats["acks_withheld"] += len(done.acks)
            log.error("commit failed; withholding %d ACKs (devices will retransmit): %s", len(done.acks), exc)
            self._failed = False
            return Flushed()
        self.stats.update(stats)
        self.stats["acks_sent"] += len(done.acks)
        self.stats["answers_sent"] += len(done.answers)
        return done

    def close(self) -> None:
        """Write the refusal counts not yet written, and commit."""
        self._refusals_saved_at = float("-inf")
        self.flush()

    def summary(self) -> dict:
        """The core's counters, refusals by code, the key ids and retired keys that keep
        being refused (a misconfigured or un-rotated device), and the dead-letter table
        against its bounds."""
        return {**dict(self.stats), "refused_by_code": self.refusals.totals(),
                "unknown_key_ids": self.refusals.top("unknown-kid"), "retired_keys": self.refusals.top("retired-kid"),
                "retention": self.store.retention()}
