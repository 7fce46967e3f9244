"""Durable storage of outcomes and dead letters in SQLite.

Rules:
- WAL journal with ``synchronous=FULL``: once ``commit()`` returns, the rows survive a
  process kill and a power cut. The gateway acknowledges a frame only after that.
- A (device, counter) is claimed once, by a stored outcome or a consumed dead letter. A
  retransmission (the identical frame) is reported as a duplicate (and counted on an
  outcome's row); the same (device, counter) with different bytes, in either table, can
  only come from a nonce reuse or a stolen key, and is a conflict.
- Every refused frame goes to dead_letters with its reason. Refused frames that did
  authenticate are "consumed": recorded once per (device, counter) and acknowledged.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from .verify import Outcome

Disposition = Literal["stored", "duplicate", "conflict"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    device      TEXT    NOT NULL,
    counter     INTEGER NOT NULL,
    time        INTEGER NOT NULL,
    model       INTEGER NOT NULL,
    domain      INTEGER NOT NULL,
    label       INTEGER NOT NULL,
    confidence  INTEGER NOT NULL,
    fingerprint BLOB    NOT NULL,
    topk        TEXT    NOT NULL,
    profile     TEXT    NOT NULL,
    frame       BLOB    NOT NULL,
    port        TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    duplicates  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device, counter)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY,
    received_at REAL    NOT NULL,
    port        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    device      TEXT,
    counter     INTEGER,
    consumed    INTEGER NOT NULL DEFAULT 0,
    frame       BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_consumed
    ON dead_letters (device, counter) WHERE consumed = 1;
"""


class StoreError(Exception):
    """The database cannot take the write (disk full, read-only, corrupt); nothing is acknowledged."""


class OutcomeStore:
    """The gateway's SQLite database."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        """Open (or create) the database; readonly opens an existing one for export only.

        A writable store checks at once that it can take a write: a gateway on a read-only
        file would otherwise run and never acknowledge anything.
        """
        self.path = Path(path)
        try:
            if readonly:
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        try:
            if readonly:
                self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
                return
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            # A write that is rolled back: fails at once on a read-only file or directory.
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(f"PRAGMA user_version = {int(version) + 1}")
            finally:
                self.rollback()
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot use database {self.path}: {exc}") from exc

    # The transaction state is asked from SQLite (in_transaction), never kept here: on
    # SQLITE_FULL or an I/O error SQLite may roll the whole transaction back by itself.
    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def _claimed(self, device: str, counter: int) -> bytes | None:
        """The frame that already holds (device, counter): a stored outcome or a consumed dead letter."""
        row = self._db.execute("SELECT frame FROM outcomes WHERE device = ? AND counter = ?", (device, counter)).fetchone()
        if row is None:
            row = self._db.execute("SELECT frame FROM dead_letters WHERE consumed = 1 AND device = ? AND counter = ?",
                                   (device, counter)).fetchone()
        return None if row is None else row[0]

    def add(self, outcome: Outcome, frame: bytes, port: str) -> Disposition:
        """Record an outcome (uncommitted until commit())."""
        self._begin()
        claimed = self._claimed(outcome.device, outcome.counter)
        if claimed is not None:
            if claimed != frame:
                return "conflict"
            self._db.execute("UPDATE outcomes SET duplicates = duplicates + 1 WHERE device = ? AND counter = ?",
                             (outcome.device, outcome.counter))
            return "duplicate"
        self._db.execute(
            "INSERT INTO outcomes (device, counter, time, model, domain, label, confidence,"
            " fingerprint, topk, profile, frame, port, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (outcome.device, outcome.counter, outcome.time, outcome.model, outcome.domain, outcome.label,
             outcome.confidence, outcome.fingerprint, _json(outcome.topk), outcome.profile, frame, port, time.time()),
        )
        return "stored"

    def dead_letter(self, reason: str, frame: bytes | None, port: str, device: str | None = None,
                    counter: int | None = None, consumed: bool = False) -> Disposition:
        """Record a refused frame; a consumed one claims its (device, counter) like an outcome."""
        self._begin()
        if consumed and device is not None and counter is not None:
            claimed = self._claimed(device, counter)
            if claimed is not None:
                return "duplicate" if claimed == frame else "conflict"
        self._db.execute(
            "INSERT INTO dead_letters (received_at, port, reason, device, counter, consumed, frame)"
            " VALUES (?,?,?,?,?,?,?)",
            (time.time(), port, reason, device, counter, int(consumed), frame),
        )
        return "stored"

    def commit(self) -> None:
        """Make every write since the last commit durable."""
        if self._db.in_transaction:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self.rollback()
                raise StoreError(f"commit to {self.path} failed: {exc}") from exc

    def rollback(self) -> None:
        """Drop every write since the last commit (a no-op if SQLite already rolled back)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def counts(self) -> dict[str, int]:
        """Rows and retransmissions seen, for summaries and metrics."""
        stored, dups = self._db.execute("SELECT COUNT(*), COALESCE(SUM(duplicates), 0) FROM outcomes").fetchone()
        (dead,) = self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        return {"frames_stored": stored, "duplicates": dups, "dead_letters": dead}

    def outcomes(self) -> Iterator[dict]:
        """Every stored outcome, oldest device counter first."""
        cur = self._db.execute(
            "SELECT device, counter, time, model, domain, label, confidence, fingerprint, topk, profile,"
            " received_at, duplicates FROM outcomes ORDER BY device, counter"
        )
        names = [d[0] for d in cur.description]
        for row in cur:
            item = dict(zip(names, row))
            item["fingerprint"] = item["fingerprint"].hex()
            item["topk"] = json.loads(item["topk"])
            yield item

    def dead_letters(self) -> Iterator[dict]:
        cur = self._db.execute(
            "SELECT id, received_at, port, reason, device, counter, consumed, frame FROM dead_letters ORDER BY id"
        )
        names = [d[0] for d in cur.description]
        for row in cur:
            item = dict(zip(names, row))
            item["frame"] = item["frame"].hex() if item["frame"] is not None else None
            yield item

    def close(self) -> None:
        self.commit()
        self._db.close()


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
