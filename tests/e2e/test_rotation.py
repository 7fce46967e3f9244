"""Key rotation with real processes: a device whose flash holds an old key is refused with a
message that says what to do; re-keyed, every frame it concluded before and after the
rotation is accounted for, delivered under the key that sealed it or counted as lost."""
from __future__ import annotations

import sqlite3

from procs import Device, Gateway, outbox, refusals, wait_until

from qis.gateway.keys import load_registry, rotate


def _frames_waiting_under_the_first_key(line, keys, state, n: int) -> tuple[bytes, set[int]]:
    """Run the device with no gateway until n frames wait in its outbox, then cut its power."""
    first = next(k for k in load_registry(keys).values() if k.device == "dev-a")
    device = Device(line.a_path, "dev-a", keys, state, frames=n, profile="compact", model="rule")
    wait_until(lambda: len(outbox(state)) >= n, what=f"{n} frames in the outbox")
    device.kill()
    return first.kid, {int(name[:-2], 16) for name in outbox(state)}


def _stored(db) -> dict[int, bytes]:
    con = sqlite3.connect(db)
    try:
        return {c: bytes(f[8:12]) for c, f in con.execute("SELECT counter, frame FROM outcomes WHERE device='dev-a'")}
    finally:
        con.close()


def test_frames_sealed_before_a_rotation_are_delivered_under_the_old_key(tmp_path, keys, line):
    state, db = tmp_path / "dev-a", tmp_path / "gw.db"
    old_kid, before = _frames_waiting_under_the_first_key(line, keys, state, 12)
    new = rotate("dev-a", keys)  # the old key id stays accepted for the default grace period
    refused = Device(line.a_path, "dev-a", keys, state, frames=8, profile="compact", model="rule")
    refused.proc.wait(timeout=60)
    assert refused.proc.returncode == 1
    message = refused.proc.stderr.read()
    assert f"holds key id {old_kid.hex()}" in message and f"gives key id {new.kid.hex()}" in message
    assert "12 frames wait in its outbox" in message and "--rekey" in message
    gw = Gateway([line.b_path], db, keys)
    try:
        summary = Device(line.a_path, "dev-a", keys, state, frames=8, profile="compact", model="rule",
                         extra=("--rekey",)).wait()
    finally:
        gw.stop()
    stored = _stored(db)
    after = set(stored) - before
    assert before <= set(stored) and len(after) == 8 and summary["lost"] == 0
    assert {stored[c] for c in before} == {old_kid} and {stored[c] for c in after} == {new.kid}
    assert min(after) > max(before)  # the counter carried on: no nonce reused under either key
    acked = [int(x) for x in (state / "acked.log").read_text().split()]
    assert sorted(acked) == sorted(stored)  # every acknowledged frame stored exactly once
    assert outbox(state) == []


def test_after_the_grace_period_the_old_frames_are_counted_lost_not_dropped_in_silence(tmp_path, keys, line):
    state, db = tmp_path / "dev-a", tmp_path / "gw.db"
    old_kid, before = _frames_waiting_under_the_first_key(line, keys, state, 10)
    rotate("dev-a", keys, grace_s=0)
    gw = Gateway([line.b_path], db, keys)
    try:
        summary = Device(line.a_path, "dev-a", keys, state, frames=6, profile="compact", model="rule",
                         extra=("--rekey", "--drop-outbox")).wait()
    finally:
        gw.stop()
    lost = {int(x) for x in (state / "lost.log").read_text().split()}
    stored = _stored(db)
    assert lost == before and summary["lost"] == 10
    assert len(stored) == 6 and not (set(stored) & lost)  # concluded = delivered + counted lost
    assert refusals(db).get("retired-kid", 0) == 0  # nothing was sent under the retired key
