"""The gateway's protocol engine, sans-IO: bytes in per port, ACK bytes out per port.

Rules:
- ``receive()`` decodes the byte stream, verifies each frame and writes the result into
  the store's open transaction; it never raises on input.
- ``flush()`` commits, and only then releases the ACKs for what the commit made durable.
  If a write or the commit fails (disk full, read-only database), the transaction is
  rolled back and its ACKs are dropped: the devices keep those frames and retransmit.
- A frame that authenticated but was refused is acknowledged once it is durably in the
  dead-letter table (re-sending it cannot help); an unauthenticated one never is, and is
  only counted (gateway.refusals), so a stranger cannot make the gateway store anything.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable

from qis.edge import stream

from .keys import DeviceKey
from .refusals import RefusalLog
from .store import OutcomeStore, StoreError
from .verify import Rejected, open_outcome, seal_ack

log = logging.getLogger("qis.gateway")
MAX_FRAME = 600  # larger than any profile; longer records are line noise


class GatewayCore:
    """Per-port stream decoding, verification, durable storage and acknowledgement."""

    def __init__(self, registry: dict[bytes, DeviceKey], store: OutcomeStore,
                 refusals: RefusalLog | None = None, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.store = store
        self.refusals = refusals or RefusalLog()
        self.refusals.load(store.refusals())
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self._by_device = {k.device: k for k in registry.values()}
        self._decoders: dict[str, stream.Decoder] = {}
        self._acks: list[tuple[str, bytes]] = []
        self._uncommitted: Counter[str] = Counter()  # outcomes of the open transaction
        self._failed = False  # a write failed in this transaction: nothing in it is acknowledged
        self._writes = 0  # store writes in the open transaction
        self._refusals_saved_at = float("-inf")

    def receive(self, port: str, data: bytes) -> None:
        """Feed bytes read from port."""
        decoder = self._decoders.get(port)
        if decoder is None:
            decoder = self._decoders[port] = stream.Decoder(MAX_FRAME)
        for kind, value in decoder.feed(data):
            if kind == "frame":
                self.receive_frame(port, bytes(value))
            else:
                self.stats["stream_errors"] += 1
                self.refusals.count(port, "stream", value, None, self.clock())

    def receive_frame(self, port: str, frame: bytes) -> None:
        """Handle one complete frame (links that deliver whole frames call this directly)."""
        self.stats["frames_received"] += 1
        try:
            outcome = open_outcome(frame, self.registry)
        except Rejected as r:
            self.stats["rejected"] += 1
            if not r.authenticated:
                self.refusals.count(port, r.code, r.detail, frame, self.clock())
                return
            log.info("dead letter from %s: %s", port, r.reason)
            disposition = self._write(self.store.dead_letter, r.reason, frame, port, r.device, r.counter, True)
            self._settle(port, r.device, r.counter, frame, disposition)
            return
        except Exception:  # a bug, not an input: keep serving the other frames and ports
            log.exception("internal error on a frame from %s; counted as refused", port)
            self.refusals.count(port, "internal", "", frame, self.clock())
            return
        disposition = self._write(self.store.add, outcome, frame, port)
        if disposition == "stored":
            self._uncommitted["stored"] += 1
        self._settle(port, outcome.device, outcome.counter, frame, disposition)

    def _settle(self, port: str, device: str, counter: int, frame: bytes, disposition: str | None) -> None:
        """ACK an authenticated frame once it is recorded; a counter reused with other bytes is refused."""
        if disposition == "conflict":
            reason = f"replayed counter {counter} of {device} with different content (nonce reuse or stolen key)"
            log.warning("dead letter from %s: %s", port, reason)
            self._write(self.store.dead_letter, reason, frame, port, device, counter)
        elif disposition:
            if disposition == "duplicate":
                self._uncommitted["duplicate"] += 1
            self._ack(port, device, counter)

    def _write(self, method, *args):
        """Run one store write; on a database error, fail the whole open transaction."""
        if self._failed:
            return None
        self._writes += 1
        try:
            return method(*args)
        except sqlite3.Error as exc:
            log.error("store write failed, nothing in this batch will be acknowledged: %s", exc)
            self._failed = True
            return None

    def _ack(self, port: str, device: str | None, counter: int | None) -> None:
        if device is not None and counter is not None:
            self._acks.append((port, stream.encode(seal_ack(self._by_device[device], counter))))

    def flush(self) -> list[tuple[str, bytes]]:
        """Commit what was received; return the (port, wire bytes) ACKs it made safe to send.

        Refusal counts are written with the commit, or on their own at most once a second;
        ``close()`` writes whatever is left."""
        acks, self._acks = self._acks, []
        done, self._uncommitted = self._uncommitted, Counter()
        writes, self._writes = self._writes, 0
        # Refusal counts ride along with a commit that happens anyway, or go on their own
        # at most once a second: a flood of garbage costs no fsync per read.
        now = self.clock()
        save_refusals = writes > 0 or now - self._refusals_saved_at >= 1.0
        refusals = self.refusals.take() if save_refusals else ([], [], [])
        try:
            if self._failed:
                raise StoreError("a write failed")
            if any(refusals):
                self.store.save_refusals(*refusals)
                self._refusals_saved_at = now
            self.store.commit()
        except (StoreError, sqlite3.Error) as exc:
            self.store.rollback()
            self.refusals.restore(refusals)
            self.stats["commit_failures"] += 1
            self.stats["acks_withheld"] += len(acks)
            log.error("commit failed; withholding %d ACKs (devices will retransmit): %s", len(acks), exc)
            self._failed = False
            return []
        self.stats.update(done)
        self.stats["acks_sent"] += len(acks)
        return acks

    def close(self) -> None:
        """Write the refusal counts not yet written, and commit."""
        self._refusals_saved_at = float("-inf")
        self.flush()
