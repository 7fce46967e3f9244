"""OutcomeStore: dispositions, dead-letter dedup, durability settings, full and read-only disks."""
from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qis.edge import frame as spec
from qis.gateway.core import GatewayCore
from qis.gateway.store import OutcomeStore, DatabaseError
from qis.gateway.verify import open_outcome, seal_ack


def rows(path: Path, sql: str) -> list:
    """Query through a second, independent connection: sees only committed data."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_add_duplicate_conflict(store, registry, frames):
    data = frames.compact("dev-a", 1)
    outcome = open_outcome(data, registry)
    assert store.add(outcome, data, "p0") == "stored"
    assert store.add(outcome, data, "p1") == "duplicate"
    assert store.add(outcome, data, "p0") == "duplicate"
    other = frames.compact("dev-a", 1, label=9)
    assert store.add(open_outcome(other, registry), other, "p0") == "conflict"
    store.commit()
    assert rows(store.path, "SELECT device, counter, label, duplicates, port, frame FROM outcomes") == [
        ("dev-a", 1, 3, 2, "p0", data)]
    assert store.counts() == {"frames_stored": 1, "duplicates": 2, "dead_letters": 0, "refused": 0}


def test_same_counter_on_two_devices_is_two_rows(store, registry, frames):
    for device in ("dev-a", "dev-b"):
        data = frames.compact(device, 1)
        assert store.add(open_outcome(data, registry), data, "p") == "stored"
    store.commit()
    assert [(r["device"], r["counter"]) for r in store.outcomes()] == [("dev-a", 1), ("dev-b", 1)]


def test_outcomes_rows(store, registry, frames):
    data = frames.full("dev-b", 4)
    store.add(open_outcome(data, registry), data, "p")
    store.commit()
    (row,) = list(store.outcomes())
    assert row["fingerprint"] == frames.FULL_FP.hex() and row["topk"] == frames.TOPK
    assert (row["device"], row["counter"], row["time"], row["profile"]) == ("dev-b", 4, frames.TIME, "full")


def test_consumed_dead_letters_kept_once_per_device_counter(store):
    assert store.dead_letter("bad version", b"x", "p", "dev-a", 5, consumed=True) == "stored"
    assert store.dead_letter("bad version", b"x", "p", "dev-a", 5, consumed=True) == "duplicate"
    assert store.dead_letter("bad version", b"x", "p", "dev-a", 6, consumed=True) == "stored"
    assert store.dead_letter("bad version", b"x", "p", "dev-b", 5, consumed=True) == "stored"
    # A counter reused with other content (not consumed) is kept every time: it is evidence.
    assert store.dead_letter("replayed counter", b"y", "p", "dev-a", 5) == "stored"
    assert store.dead_letter("replayed counter", b"y", "p", "dev-a", 5) == "stored"
    store.commit()
    assert rows(store.path, "SELECT COUNT(*) FROM dead_letters WHERE consumed = 1") == [(3,)]
    assert rows(store.path, "SELECT COUNT(*) FROM dead_letters") == [(5,)]
    assert [d["frame"] for d in store.dead_letters()][:1] == [b"x".hex()]


def test_only_committed_rows_are_visible(store, registry, frames):
    first, second = frames.compact("dev-a", 1), frames.compact("dev-a", 2)
    store.add(open_outcome(first, registry), first, "p")
    store.commit()
    store.add(open_outcome(second, registry), second, "p")
    store.dead_letter("x", b"f", "p", "dev-a", 3)
    assert rows(store.path, "SELECT counter FROM outcomes") == [(1,)]
    assert rows(store.path, "SELECT COUNT(*) FROM dead_letters") == [(0,)]
    store.rollback()
    assert rows(store.path, "SELECT counter FROM outcomes") == [(1,)]
    store.commit()
    assert rows(store.path, "SELECT counter FROM outcomes") == [(1,)]


def test_commit_survives_reopen(tmp_path, registry, frames):
    data = frames.compact("dev-a", 1)
    s = OutcomeStore(tmp_path / "gw.db")
    s.add(open_outcome(data, registry), data, "p")
    s.commit()
    s._db.close()  # no close(): its implicit commit would hide a missing one
    again = OutcomeStore(tmp_path / "gw.db")
    assert [r["counter"] for r in again.outcomes()] == [1]
    again.close()


def test_wal_and_synchronous_full(store):
    # synchronous is per connection, so it is read on the store's own connection.
    assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert rows(store.path, "PRAGMA journal_mode") == [("wal",)]  # persistent in the file


def feed(core: GatewayCore, port: str, frames_: list[bytes]) -> list[tuple[str, bytes]]:
    for f in frames_:
        core.receive(port, f)
    return core.flush().acks


def test_disk_full_withholds_acks_and_loses_nothing(store, registry, frames, devices, caplog):
    """max_page_count is set on the store's own connection (store._db): the limit is per
    connection, and it is the only portable way to make SQLite hit SQLITE_FULL."""
    core = GatewayCore(registry, store)
    first = [frames.full("dev-a", c) for c in range(3)]
    assert len(feed(core, "p", first)) == 3
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    batch = [frames.full("dev-a", c) for c in range(3, 30)] + [frames.full("dev-b", 1)]
    with caplog.at_level("ERROR", logger="qis.gateway"):
        assert feed(core, "p", batch) == []
    assert "database or disk is full" in caplog.text
    assert core.stats["commit_failures"] == 1
    assert core.stats["acks_withheld"] >= 1  # the frames stored before the page limit hit
    assert core.stats["acks_sent"] == 3
    assert rows(store.path, "SELECT counter FROM outcomes ORDER BY counter") == [(0,), (1,), (2,)]
    assert not store._db.in_transaction
    # The disk has room again: the devices retransmit the same bytes and get every ACK.
    store._db.execute("PRAGMA max_page_count = 1073741823")
    acks = feed(core, "p", batch)
    assert [a for _, a in acks] == [seal_ack(devices["dev-a"], c) for c in range(3, 30)] + [
        seal_ack(devices["dev-b"], 1)]
    assert rows(store.path, "SELECT COUNT(*), SUM(duplicates) FROM outcomes") == [(31, 0)]
    assert core.stats["commit_failures"] == 1


def test_disk_full_on_a_dead_letter(store, registry, frames):
    core = GatewayCore(registry, store)
    feed(core, "p", [frames.compact("dev-a", 0)])
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    wrong_version = [2] + frames.compact_fields()[1:]
    bad = [frames.sealed_fields("dev-a", c, wrong_version) for c in range(1, 61)]  # authenticated, refused
    assert feed(core, "p", bad) == []  # enough dead letters (with their frames) to need a new page
    assert core.stats["commit_failures"] == 1
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert len(feed(core, "p", bad)) == 60
    assert rows(store.path, "SELECT DISTINCT reason FROM dead_letters WHERE consumed = 1") == [
        ("unsupported version 2 (this gateway speaks version 1)",)]


def run_without_root_powers(code: str) -> subprocess.CompletedProcess:
    """Run python code with ordinary file permission checks, also when the tests run as
    root (root ignores chmod: the child drops CAP_DAC_OVERRIDE with capsh)."""
    argv = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        capsh = shutil.which("capsh")
        assert capsh, "running as root: capsh (libcap2-bin) is needed to drop CAP_DAC_OVERRIDE"
        argv = [capsh, "--drop=cap_dac_override,cap_dac_read_search,cap_fowner", "--", "-c",
                "exec " + shlex.join(argv)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


OPEN_AND_WRITE = """
from qis.gateway.store import OutcomeStore, DatabaseError
try:
    OutcomeStore(%r)
except DatabaseError as exc:
    print("DatabaseError:", exc)
"""


@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_database_is_a_clear_error(tmp_path, what):
    path = tmp_path / "ro" / "gw.db"
    OutcomeStore(path).close()
    os.chmod(path, 0o444)
    if what == "directory":
        os.chmod(path.parent, 0o555)
    try:
        r = run_without_root_powers(OPEN_AND_WRITE % str(path))
    finally:
        os.chmod(path.parent, 0o755)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"DatabaseError: cannot use database {path}: attempt to write a readonly database")


def test_read_only_database_can_be_exported(tmp_path, registry, frames):
    path = tmp_path / "gw.db"
    s = OutcomeStore(path)
    data = frames.compact("dev-a", 1)
    s.add(open_outcome(data, registry), data, "p")
    s.close()
    os.chmod(path, 0o444)
    r = run_without_root_powers(f"from qis.tools.cli.main import main; raise SystemExit(main(['outcomes', 'export', '--db', {str(path)!r}]))")
    assert r.returncode == 0, r.stderr
    assert '"device":"dev-a","counter":1' in r.stdout


def test_database_path_is_a_directory(tmp_path):
    with pytest.raises(DatabaseError, match=f"database {tmp_path}"):
        OutcomeStore(tmp_path)


def test_database_wal_and_shm_are_private(tmp_path, registry, frames):
    path = tmp_path / "new" / "gw.db"
    s = OutcomeStore(path)
    data = frames.compact("dev-a", 1)
    s.add(open_outcome(data, registry), data, "p")
    s.commit()
    files = [path, path.with_name("gw.db-wal"), path.with_name("gw.db-shm")]
    assert all(f.exists() for f in files)
    assert [oct(os.stat(f).st_mode & 0o777) for f in files] == [oct(0o600)] * 3
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    s.close()


def test_an_existing_open_database_is_made_private(tmp_path):
    path = tmp_path / "gw.db"
    OutcomeStore(path).close()
    for f in tmp_path.glob("gw.db*"):
        os.chmod(f, 0o644)
    s = OutcomeStore(path)
    s.commit()
    assert {f.name: oct(os.stat(f).st_mode & 0o777) for f in tmp_path.glob("gw.db*")} == {
        f.name: oct(0o600) for f in tmp_path.glob("gw.db*")}
    s.close()


def test_extension_map_is_stored_and_exported(store, registry, frames):
    fields = frames.full_fields()
    fields[9] = {1: 5, -2: b"\x01\x02", 7: [1, "x"]}
    data = frames.sealed_fields("dev-a", 3, fields, spec.FULL)
    assert store.add(open_outcome(data, registry), data, "p") == "stored"
    store.commit()
    (row,) = list(store.outcomes())
    assert row["ext"] == {"1": 5, "-2": "0102", "7": [1, "x"]}
    assert rows(store.path, "SELECT ext FROM outcomes") == [(bytes.fromhex("a3 01 05 07 82 01 61 78 21 42 01 02".replace(" ", "")),)]


def test_a_database_of_version_0_1_gains_the_new_columns_and_tables(tmp_path, registry, frames):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE outcomes (device TEXT NOT NULL, counter INTEGER NOT NULL, time INTEGER NOT NULL,
            model INTEGER NOT NULL, domain INTEGER NOT NULL, label INTEGER NOT NULL, confidence INTEGER NOT NULL,
            fingerprint BLOB NOT NULL, topk TEXT NOT NULL, profile TEXT NOT NULL, frame BLOB NOT NULL,
            port TEXT NOT NULL, received_at REAL NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (device, counter));
        CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, received_at REAL NOT NULL, port TEXT NOT NULL,
            reason TEXT NOT NULL, device TEXT, counter INTEGER, consumed INTEGER NOT NULL DEFAULT 0, frame BLOB);
    """)
    db.close()
    with pytest.raises(DatabaseError, match="written by an older qis-edge"):
        OutcomeStore(path, readonly=True)
    s = OutcomeStore(path)
    data = frames.compact("dev-a", 1)
    assert s.add(open_outcome(data, registry), data, "p") == "stored"
    s.close()
    again = OutcomeStore(path, readonly=True)
    assert [r["ext"] for r in again.outcomes()] == [{}]
    again.close()


def test_dead_letters_bounded_per_device_oldest_first(tmp_path):
    s = OutcomeStore(tmp_path / "gw.db", per_device=5)
    for c in range(12):
        assert s.dead_letter("bad", bytes(51), "p", "dev-a", c, consumed=True) == "stored"
    s.dead_letter("bad", bytes(51), "p", "dev-b", 0, consumed=True)
    s.commit()
    assert rows(s.path, "SELECT device, counter FROM dead_letters ORDER BY id") == [
        ("dev-a", c) for c in range(7, 12)] + [("dev-b", 0)]
    assert rows(s.path, "SELECT device, evicted FROM retention") == [("dev-a", 7)]
    assert s.retention()["evicted"] == 7 and s.retention()["dead_letter_rows"] == 6
    s.close()


def test_dead_letters_bounded_by_a_byte_budget(tmp_path):
    s = OutcomeStore(tmp_path / "gw.db", budget_bytes=10_000)
    for c in range(100):
        s.dead_letter("r" * 10, bytes(512), f"p{c % 3}", f"dev-{c % 7}", c, consumed=True)
    s.commit()
    ret = s.retention()
    assert ret["dead_letter_bytes"] <= 10_000 and ret["dead_letter_rows"] == ret["dead_letter_bytes"] // 522
    assert ret["evicted"] == 100 - ret["dead_letter_rows"]
    newest = [c for (c,) in rows(s.path, "SELECT counter FROM dead_letters ORDER BY id")]
    assert newest == list(range(100 - len(newest), 100))
    s.close()
    # The running total survives a reopen and a rollback: it is read back from the table.
    again = OutcomeStore(tmp_path / "gw.db", budget_bytes=10_000)
    again.dead_letter("r" * 10, bytes(512), "p", "dev-x", 1, consumed=True)
    again.rollback()
    assert again.retention()["dead_letter_bytes"] == ret["dead_letter_bytes"]
    again.close()
