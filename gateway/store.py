"""Durable storage of outcomes and dead letters in SQLite.

Rules:
- WAL journal with ``synchronous=FULL``: once ``commit()`` returns, the rows survive a
  process kill and a power cut. The gateway acknowledges a frame only after that.
- A (device, counter) is claimed once, by a stored outcome or a consumed dead letter. A
  retransmission (the identical frame) is reported as a duplicate (and counted on an
  outcome's row); the same (device, counter) with different bytes, in either table, can
  only come from a nonce reuse or a stolen key, and is a conflict.
- Only authenticated refusals become rows (dead_letters): "consumed" ones are recorded
  once per (device, counter) and acknowledged. They are bounded twice: at most
  ``per_device`` rows per device and ``budget_bytes`` of frames and reasons in all; the
  oldest rows go first, and every eviction is counted (table retention).
- Unauthenticated input never becomes a row of its own: its counts (table refusals) and a
  bounded ring of sample frames (table refusal_samples) are written as the caller hands
  them over (gateway.refusals keeps both bounded), so strangers cannot grow the file.
- The database, its WAL and its shared-memory file are private to the gateway's user
  (0600): they hold every outcome in the clear.
"""
from __future__ import annotations

import functools
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from qis.edge import cbor as det_cbor

from .errors import GatewayError
from .schema import MIGRATIONS, SCHEMA
from .verify import REASON_MAX, Outcome, Query, jsonable

Disposition = Literal["stored", "duplicate", "conflict"]

DEAD_LETTERS_PER_DEVICE = 1000
DEAD_LETTER_BUDGET_BYTES = 64 * 1024 * 1024


class DatabaseError(GatewayError):
    """The database cannot take the write (disk full, read-only, corrupt); nothing is acknowledged."""


def _database_errors(method):
    """A write's sqlite3 errors as DatabaseError: callers know the store, not SQL."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise DatabaseError(f"write to {self.path} failed: {exc}") from exc

    return wrapper


class OutcomeStore:
    """The gateway's SQLite database."""

    def __init__(self, path: Path, readonly: bool = False, per_device: int = DEAD_LETTERS_PER_DEVICE,
                 budget_bytes: int = DEAD_LETTER_BUDGET_BYTES) -> None:
        """Open (or create) the database; readonly opens an existing one for export only.

        A writable store checks at once that it can take a write: a gateway on a read-only
        file would otherwise run and never acknowledge anything. ``per_device`` and
        ``budget_bytes`` bound the dead-letter table (see the module's rules).
        """
        self.path = Path(path)
        self.per_device = per_device
        self.budget_bytes = budget_bytes
        try:
            if readonly:
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
            else:
                _make_private(self.path)
                self._db = sqlite3.connect(self.path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseError(f"cannot open database {self.path}: {exc}") from exc
        try:
            if readonly:
                self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
                if not self._up_to_date():
                    raise sqlite3.OperationalError("it was written by an older qis-edge; let `qis gateway run` "
                                                   "open it once to upgrade it")
                return
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # After a checkpoint the WAL file shrinks back to this size: a burst of writes
            # does not leave a large file behind.
            self._db.execute("PRAGMA journal_size_limit = 4194304")
            self._db.executescript(SCHEMA)
            self._migrate()
            # A write that is rolled back: fails at once on a read-only file or directory.
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(f"PRAGMA user_version = {int(version) + 1}")
            finally:
                self.rollback()
        except sqlite3.Error as exc:
            self._db.close()
            raise DatabaseError(f"cannot use database {self.path}: {exc}") from exc
        for suffix in ("-wal", "-shm"):  # SQLite gives them the database's mode; older files may differ
            _make_private(self.path.with_name(self.path.name + suffix), create=False)
        self._dead_bytes = self._count_dead_bytes()

    def _up_to_date(self) -> bool:
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {"refusals", "refusal_samples", "retention", "queries", "confirmations", "cursors",
                "snapshots"} <= tables and all(
            column in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for table, column, _ in MIGRATIONS)

    def _migrate(self) -> None:
        for table, column, decl in MIGRATIONS:
            names = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in names:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    # The transaction state is asked from SQLite (in_transaction), never kept here: on
    # SQLITE_FULL or an I/O error SQLite may roll the whole transaction back by itself.
    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def _claimed(self, device: str, counter: int) -> bytes | None:
        """The frame that already holds (device, counter): a stored outcome, a query or a
        consumed dead letter (a counter is a nonce: one frame each, whatever its kind)."""
        for sql in ("SELECT frame FROM outcomes WHERE device = ? AND counter = ?",
                    "SELECT frame FROM queries WHERE device = ? AND counter = ?",
                    "SELECT frame FROM dead_letters WHERE consumed = 1 AND device = ? AND counter = ?"):
            row = self._db.execute(sql, (device, counter)).fetchone()
            if row is not None:
                return row[0]
        return None

    @_database_errors
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
            " fingerprint, topk, profile, frame, port, received_at, ext) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (outcome.device, outcome.counter, outcome.time, outcome.model, outcome.domain, outcome.label,
             outcome.confidence, outcome.fingerprint, _json(outcome.topk), outcome.profile, frame, port, time.time(),
             det_cbor.dumps(outcome.ext) if outcome.ext else None),
        )
        return "stored"

    @_database_errors
    def add_query(self, query: Query, frame: bytes, port: str) -> Disposition:
        """Record a query (uncommitted until commit()); it claims its (device, counter)."""
        self._begin()
        claimed = self._claimed(query.device, query.counter)
        if claimed is not None:
            return "duplicate" if claimed == frame else "conflict"
        self._db.execute(
            "INSERT INTO queries (device, counter, kid, profile, domain, fingerprint, frame, port, received_at)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (query.device, query.counter, query.kid, query.profile, query.domain, query.fingerprint, frame, port,
             time.time()))
        return "stored"

    def answer_of(self, device: str, counter: int) -> bytes | None:
        """The answer frame stored for query (device, counter), if it was answered."""
        row = self._db.execute("SELECT answer FROM queries WHERE device = ? AND counter = ?", (device, counter)).fetchone()
        return None if row is None else row[0]

    @_database_errors
    def save_answer(self, device: str, counter: int, frame: bytes, status: int) -> bool:
        """Store the answer to a query, once: False if it already has one (keep that one:
        a downlink nonce seals one message)."""
        self._begin()
        cur = self._db.execute("UPDATE queries SET answer = ?, status = ?, answered_at = ? WHERE device = ? AND"
                               " counter = ? AND answer IS NULL", (frame, status, time.time(), device, counter))
        return cur.rowcount == 1

    @_database_errors
    def dead_letter(self, reason: str, frame: bytes, port: str, device: str, counter: int,
                    consumed: bool = False) -> Disposition:
        """Record an authenticated frame that was refused; a consumed one claims its
        (device, counter) like an outcome. Older rows are evicted to stay in bounds."""
        self._begin()
        if consumed:
            claimed = self._claimed(device, counter)
            if claimed is not None:
                return "duplicate" if claimed == frame else "conflict"
        reason = reason[:REASON_MAX]
        self._db.execute(
            "INSERT INTO dead_letters (received_at, port, reason, device, counter, consumed, frame)"
            " VALUES (?,?,?,?,?,?,?)",
            (time.time(), port, reason, device, counter, int(consumed), frame),
        )
        self._dead_bytes += len(frame) + len(reason.encode())
        (rows,) = self._db.execute("SELECT COUNT(*) FROM dead_letters WHERE device = ?", (device,)).fetchone()
        if rows > self.per_device:
            self._evict("WHERE device = ?", (device,), rows - self.per_device)
        while self._dead_bytes > self.budget_bytes:
            self._evict("", (), 16)
        return "stored"

    def _evict(self, where: str, args: tuple, n: int) -> None:
        """Delete the n oldest dead letters matching where, counting them per device."""
        victims = self._db.execute(
            f"SELECT id, device, LENGTH(frame) + LENGTH(reason) FROM dead_letters {where} ORDER BY id LIMIT ?",
            (*args, n)).fetchall()
        for row_id, device, size in victims:
            self._db.execute("DELETE FROM dead_letters WHERE id = ?", (row_id,))
            self._db.execute("INSERT INTO retention (device, evicted) VALUES (?, 1)"
                             " ON CONFLICT (device) DO UPDATE SET evicted = evicted + 1", (device or "",))
            self._dead_bytes -= size
        if not victims:  # nothing left to evict: the budget is smaller than one row
            self._dead_bytes = 0

    @_database_errors
    def save_refusals(self, counts: list[tuple[str, str, str, int, float, float]], dropped: list[tuple[str, str, str]],
                      samples: list[tuple[str, int, float, str, bytes]]) -> None:
        """Write refusal counts (port, code, detail, count, first_at, last_at) as they now
        stand, delete the dropped (port, code, detail) rows, and put sample frames into
        their (port, slot) of the ring. The caller bounds all three."""
        self._begin()
        self._db.executemany("DELETE FROM refusals WHERE port = ? AND code = ? AND detail = ?", dropped)
        self._db.executemany("INSERT OR REPLACE INTO refusals VALUES (?,?,?,?,?,?)", counts)
        self._db.executemany("INSERT OR REPLACE INTO refusal_samples VALUES (?,?,?,?,?)", samples)

    def refusals(self) -> list[dict]:
        """Every refusal count, largest first."""
        cur = self._db.execute("SELECT port, code, detail, count, first_at, last_at FROM refusals"
                               " ORDER BY count DESC, port, code, detail")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def refusal_samples(self) -> list[dict]:
        cur = self._db.execute("SELECT port, slot, received_at, code, frame FROM refusal_samples ORDER BY port, slot")
        return [{"port": p, "slot": s, "received_at": t, "code": c, "frame": f.hex()} for p, s, t, c, f in cur]

    def retention(self) -> dict[str, int]:
        """How full the dead-letter table is against its bounds, and what was evicted."""
        (rows,) = self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        size = self._count_dead_bytes()
        (evicted,) = self._db.execute("SELECT COALESCE(SUM(evicted), 0) FROM retention").fetchone()
        return {"dead_letter_rows": rows, "dead_letter_bytes": size, "budget_bytes": self.budget_bytes,
                "per_device": self.per_device, "evicted": evicted}

    def commit(self) -> None:
        """Make every write since the last commit durable."""
        if self._db.in_transaction:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self.rollback()
                raise DatabaseError(f"commit to {self.path} failed: {exc}") from exc

    def rollback(self) -> None:
        """Drop every write since the last commit (a no-op if SQLite already rolled back)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._dead_bytes = self._count_dead_bytes()

    def _count_dead_bytes(self) -> int:
        (size,) = self._db.execute("SELECT COALESCE(SUM(LENGTH(frame) + LENGTH(reason)), 0) FROM dead_letters").fetchone()
        return size

    def counts(self) -> dict[str, int]:
        """Rows and retransmissions seen, for summaries and metrics."""
        stored, dups = self._db.execute("SELECT COUNT(*), COALESCE(SUM(duplicates), 0) FROM outcomes").fetchone()
        (dead,) = self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        (refused,) = self._db.execute("SELECT COALESCE(SUM(count), 0) FROM refusals").fetchone()
        return {"frames_stored": stored, "duplicates": dups, "dead_letters": dead, "refused": refused}

    def labels(self, device: str) -> dict[int, int]:
        """counter -> label of every outcome stored for device."""
        return dict(self._db.execute("SELECT counter, label FROM outcomes WHERE device = ?", (device,)))

    def outcomes(self) -> Iterator[dict]:
        """Every stored outcome, oldest device counter first."""
        cur = self._db.execute(
            "SELECT device, counter, time, model, domain, label, confidence, fingerprint, topk, ext, profile,"
            " received_at, duplicates FROM outcomes ORDER BY device, counter"
        )
        names = [d[0] for d in cur.description]
        for row in cur:
            item = dict(zip(names, row))
            item["fingerprint"] = item["fingerprint"].hex()
            item["topk"] = json.loads(item["topk"])
            item["ext"] = jsonable(det_cbor.loads(item["ext"])) if item["ext"] else {}
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

    @_database_errors
    def confirm(self, device: str, counter: int, label: int) -> dict:
        """Record a clinician's confirmation (or correction) of a stored outcome and commit
        it; the outcome as a dict. GatewayError if there is no such outcome or it was
        already confirmed (one confirmation per outcome: a second would be a second vote)."""
        row = self._db.execute("SELECT label FROM outcomes WHERE device = ? AND counter = ?", (device, counter)).fetchone()
        if row is None:
            raise GatewayError(f"no stored outcome of device {device} with counter {counter} in {self.path}")
        done = self._db.execute("SELECT label FROM confirmations WHERE device = ? AND counter = ?",
                                (device, counter)).fetchone()
        if done is not None:
            raise GatewayError(f"outcome {device}/{counter} was already confirmed as label {done[0]}")
        self._begin()
        self._db.execute("INSERT INTO confirmations (device, counter, label, confirmed_at) VALUES (?,?,?,?)",
                         (device, counter, label, time.time()))
        self.commit()
        return {"device": device, "counter": counter, "concluded": row[0], "confirmed": label}

    def close(self) -> None:
        self.commit()
        self._db.close()


def _make_private(path: Path, create: bool = True) -> None:
    """Create path empty with mode 0600 (its directory 0700), or take group and others'
    bits off an existing file; DatabaseError if that is not allowed."""
    try:
        if create and not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        elif path.is_file():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                os.chmod(path, mode & 0o700)
    except OSError as exc:
        raise DatabaseError(f"cannot make {path} private to this user (it holds outcomes in the clear): {exc}") from exc


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
