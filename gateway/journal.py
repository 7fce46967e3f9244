"""The federation's view of the gateway's database (gateway.federation reads and writes
through it, never through SQL of its own).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from .store import DatabaseError, _database_errors


class Journal:
    """The federation's view of the database, on a connection of its own: it reads only
    committed rows (WAL readers see the last commit), so nothing is forwarded before it is
    durable and acknowledged. Its cursor and snapshot writes never wait for a lock: the
    core's open transaction belongs to the same thread, so waiting would block the very
    loop that must commit it. A write that finds the database locked raises DatabaseError
    at once (Busy), and the caller tries again after yielding to the loop."""

    _ROWS = {  # what the federation forwards, in the order it was committed
        "outcomes": "SELECT rowid, device, counter, time, model, domain, label, confidence, fingerprint, profile,"
                    " NULL FROM outcomes WHERE rowid > ? ORDER BY rowid LIMIT ?",
        "confirmations": "SELECT c.id, o.device, o.counter, o.time, o.model, o.domain, o.label, o.confidence,"
                         " o.fingerprint, o.profile, c.label FROM confirmations c JOIN outcomes o"
                         " ON o.device = c.device AND o.counter = c.counter WHERE c.id > ? ORDER BY c.id LIMIT ?",
    }

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=0)
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open database {self.path}: {exc}") from exc

    def rows(self, kind: str, after: int, limit: int = 256) -> list[tuple]:
        """Committed rows of kind ("outcomes" or "confirmations") after position `after`:
        (position, device, counter, time, model, domain, label, confidence, fingerprint,
        profile, confirmed label or None)."""
        return self._db.execute(self._ROWS[kind], (after, limit)).fetchall()

    def cursor(self, name: str) -> int:
        row = self._db.execute("SELECT position FROM cursors WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else row[0]

    @_database_errors
    def set_cursor(self, name: str, position: int) -> None:
        """Move a cursor, durably (the forwarder's record of what the bus has confirmed)."""
        self._db.execute("INSERT INTO cursors VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                         (name, position))

    @_database_errors
    def save_snapshots(self, snapshots: list[tuple[str, int, bytes]]) -> None:
        """(shard, stream sequence, state) rows, in one transaction (one fsync)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", snapshots)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def snapshots(self) -> dict[str, tuple[int, bytes]]:
        return {s: (q, b) for s, q, b in self._db.execute("SELECT shard, sequence, state FROM snapshots")}

    def close(self) -> None:
        self._db.close()

