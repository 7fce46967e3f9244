"""GatewayCore: frames in per port; ACKs and stored outcomes out, only after the commit."""
from __future__ import annotations

import sqlite3

import pytest

from qis.gateway.core import Flushed, GatewayCore
from qis.gateway.verify import seal_ack


@pytest.fixture
def core(registry, store) -> GatewayCore:
    return GatewayCore(registry, store)


def committed(store, sql: str) -> list:
    db = sqlite3.connect(store.path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_acks_per_port_only_after_flush(core, store, frames, devices):
    a = [frames.compact("dev-a", c) for c in (1, 2, 3)]
    b = [frames.full("dev-b", c) for c in (7, 8)]
    for port, batch in (("ttyA", a[:2]), ("ttyB", b), ("ttyA", a[2:])):
        for f in batch:
            core.receive(port, f)
    assert committed(store, "SELECT COUNT(*) FROM outcomes") == [(0,)]
    done = core.flush()
    assert sorted(done.acks) == sorted(
        [("ttyA", seal_ack(devices["dev-a"], c)) for c in (1, 2, 3)]
        + [("ttyB", seal_ack(devices["dev-b"], c)) for c in (7, 8)])
    assert committed(store, "SELECT device, counter, port FROM outcomes ORDER BY device, counter") == [
        ("dev-a", 1, "ttyA"), ("dev-a", 2, "ttyA"), ("dev-a", 3, "ttyA"), ("dev-b", 7, "ttyB"), ("dev-b", 8, "ttyB")]
    assert core.flush() == Flushed()  # nothing new, nothing re-sent
    assert core.stats["stored"] == 5 and core.stats["acks_sent"] == 5


def test_flush_hands_over_the_outcomes_the_commit_stored(core, store, frames, devices):
    first, again, bad = frames.full("dev-a", 1), frames.full("dev-a", 1), frames.compact("dev-b", 2, label=4)
    for f in (first, again, bad):
        core.receive("p", f)
    done = core.flush()
    assert [(o.device, o.counter, o.label) for o in done.committed] == [("dev-a", 1, 3), ("dev-b", 2, 4)]
    assert len(done.acks) == 3  # the duplicate is acknowledged again, not handed over twice
    core.receive("p", first)
    assert core.flush().committed == []


def test_duplicate_gets_the_same_ack_and_no_second_row(core, store, frames, devices):
    data = frames.compact("dev-a", 4)
    core.receive("p", data)
    (first,) = core.flush().acks
    core.receive("p", data)
    (second,) = core.flush().acks
    assert first == second == ("p", seal_ack(devices["dev-a"], 4))
    assert committed(store, "SELECT counter, duplicates FROM outcomes") == [(4, 1)]
    assert core.stats["duplicate"] == 1


def test_authenticated_invalid_frame_dead_lettered_once_and_acked(core, store, frames, devices):
    bad = frames.sealed_fields("dev-b", 9, [1, 1] + frames.compact_fields()[2:6] + [256, frames.COMPACT_FP])
    for _ in range(3):
        core.receive("p", bad)
        assert core.flush().acks == [("p", seal_ack(devices["dev-b"], 9))]
    assert committed(store, "SELECT reason, device, counter, consumed, frame FROM dead_letters") == [
        ("confidence must be an integer in 0..255, got 256", "dev-b", 9, 1, bad)]
    assert committed(store, "SELECT COUNT(*) FROM outcomes") == [(0,)]


def test_unauthenticated_frame_is_not_acked(core, store, frames, devices):
    data = bytearray(frames.compact("dev-a", 5))
    data[30] ^= 0x10
    core.receive("lora", bytes(data))
    assert core.flush() == Flushed()
    assert committed(store, "SELECT COUNT(*) FROM dead_letters") == [(0,)]  # counted, not stored
    assert committed(store, "SELECT port, code, detail, count FROM refusals") == [("lora", "auth", "dev-a", 1)]
    assert committed(store, "SELECT port, code, frame FROM refusal_samples") == [("lora", "auth", bytes(data))]


def test_replayed_counter_with_other_content(core, store, frames):
    core.receive("p", frames.compact("dev-a", 6, label=1))
    assert len(core.flush().acks) == 1
    replay = frames.compact("dev-a", 6, label=2)
    core.receive("p", replay)
    assert core.flush() == Flushed()
    assert committed(store, "SELECT label FROM outcomes") == [(1,)]
    ((reason, device, counter, consumed, frame),) = committed(
        store, "SELECT reason, device, counter, consumed, frame FROM dead_letters")
    assert reason.startswith("replayed counter 6 of dev-a with different content")
    assert (device, counter, consumed, frame) == ("dev-a", 6, 0, replay)


def test_link_level_refusals_are_counted(core, store):
    core.refuse("p", "stream", "crc mismatch")
    core.refuse("p", "stream", "crc mismatch")
    core.refuse("q", "stream", "too long")
    assert core.flush() == Flushed()
    assert committed(store, "SELECT port, code, detail, count FROM refusals ORDER BY port") == [
        ("p", "stream", "crc mismatch", 2), ("q", "stream", "too long", 1)]
    assert core.stats["stream_errors"] == 3


def test_log_lines_carry_no_key_material(core, frames, devices, caplog):
    bad = frames.sealed_fields("dev-a", 9, [2] + frames.compact_fields()[1:])
    with caplog.at_level("INFO", logger="qis.gateway"):
        for f in (bad, frames.compact("dev-a", 10), frames.compact("dev-a", 10, label=7)):
            core.receive("p", f)
        core.flush()
    assert "unsupported version 2" in caplog.text and "replayed counter 10" in caplog.text
    for d in devices.values():
        assert d.key.hex() not in caplog.text and d.key.hex().upper() not in caplog.text
        assert repr(d.key) not in caplog.text


def _replays(store) -> list:
    return committed(store, "SELECT device, counter FROM dead_letters WHERE reason LIKE 'replayed counter%'")


def test_counter_of_a_consumed_dead_letter_cannot_be_reused_by_an_outcome(core, store, frames):
    bad = frames.sealed_fields("dev-a", 11, [1, 1] + frames.compact_fields()[2:6] + [256, frames.COMPACT_FP])
    core.receive("p", bad)
    assert len(core.flush().acks) == 1  # refused but recorded: acknowledged
    core.receive("p", frames.compact("dev-a", 11))  # a valid frame under the same nonce
    assert core.flush() == Flushed()
    assert committed(store, "SELECT COUNT(*) FROM outcomes") == [(0,)]
    assert _replays(store) == [("dev-a", 11)]


def test_counter_of_an_outcome_cannot_be_reused_by_an_invalid_frame(core, store, frames):
    core.receive("p", frames.compact("dev-a", 12))
    assert len(core.flush().acks) == 1
    bad = frames.sealed_fields("dev-a", 12, [1, 1] + frames.compact_fields()[2:6] + [256, frames.COMPACT_FP])
    core.receive("p", bad)
    assert core.flush() == Flushed()
    assert _replays(store) == [("dev-a", 12)]
    assert committed(store, "SELECT counter, duplicates FROM outcomes") == [(12, 0)]


def test_two_different_invalid_frames_under_one_counter(core, store, frames):
    first = frames.sealed_fields("dev-a", 13, [1, 1] + frames.compact_fields()[2:6] + [256, frames.COMPACT_FP])
    second = frames.sealed_fields("dev-a", 13, [2, 1] + frames.compact_fields()[2:8])
    core.receive("p", first)
    assert len(core.flush().acks) == 1
    core.receive("p", second)
    assert core.flush() == Flushed()
    assert _replays(store) == [("dev-a", 13)]


def test_a_retired_key_is_accepted_until_its_time_and_acked_under_itself(keys_dir, devices, frames, tmp_path):
    from qis.gateway.keys import load_registry, rotate
    from qis.gateway.store import OutcomeStore

    old = devices["dev-a"]
    new = rotate("dev-a", keys_dir, grace_s=100, now=1000.0)
    clock = [1050.0]
    store = OutcomeStore(tmp_path / "rot.db")
    core = GatewayCore(load_registry(keys_dir), store, clock=lambda: clock[0])
    before = frames.seal(old.key, old.kid, 5, frames.compact_plaintext())  # sealed before the rotation
    after = frames.seal(new.key, new.kid, 6, frames.compact_plaintext())
    core.receive("p", before)
    core.receive("p", after)
    assert core.flush().acks == [("p", seal_ack(old, 5)), ("p", seal_ack(new, 6))]
    clock[0] = 1101.0  # past accept_until
    late = frames.seal(old.key, old.kid, 7, frames.compact_plaintext())
    core.receive("p", late)
    assert core.flush() == Flushed()
    assert core.summary()["retired_keys"] == {"dev-a": 1}
    assert committed(store, "SELECT counter FROM outcomes ORDER BY counter") == [(5,), (6,)]
    store.close()


def test_frames_under_unknown_key_ids_are_counted_per_key_id(core, frames, stranger):
    for c in range(5):
        core.receive("ttyA", frames.seal(stranger.key, stranger.kid, c, frames.compact_plaintext()))
    core.receive("ttyB", frames.seal(stranger.key, b"\x00\x00\x00\x01", 0, frames.compact_plaintext()))
    core.flush()
    assert core.summary()["unknown_key_ids"] == {stranger.kid.hex(): 5, "00000001": 1}


def _query(frames, device, counter, probe=0):
    from qis.edge import frame as spec

    d = frames.devices[device]
    return frames.seal(d.key, d.kid, counter, bytes(spec.encode_query(spec.FULL, frames.TIME, 3, 1, frames.FULL_FP,
                                                                      probe)))


def test_a_query_is_handed_over_once_durable_and_its_answer_stored_and_repeated(core, store, frames, devices):
    from qis.edge import frame as spec
    from qis.edge.ccm import CCM

    q = _query(frames, "dev-a", 30)
    core.receive("p", q)
    core.receive("p", q)  # repeated before it was answered: nothing to send yet
    done = core.flush()
    assert [(port, x.counter, x.fingerprint) for port, x in done.queries] == [("p", 30, frames.FULL_FP)]
    assert done.acks == [] and done.answers == []
    core.answer("p", done.queries[0][1], spec.ANSWERED, 25, 3, [[0, 200]], [5, 255], [[3, 5, 255]])
    (port, _, answer), = core.flush().answers
    assert port == "p" and len(answer) == spec.FULL.answer_size
    counter, fields = spec.open_answer(CCM(devices["dev-a"].key), devices["dev-a"].kid, answer, spec.FULL)
    assert counter == 30 and fields[:3] == [spec.ANSWERED, 25, 3]
    core.receive("q", q)  # the device did not get it: the same bytes again, on the port it asked from now
    assert [(p, a) for p, _, a in core.flush().answers] == [("q", answer)]
    core.answer("p", done.queries[0][1], spec.TOO_FEW)  # a second answer is never stored or sent
    assert core.flush().answers == []
    assert committed(store, "SELECT counter, status FROM queries") == [(30, spec.ANSWERED)]


def test_a_counter_used_by_a_query_cannot_be_reused_by_an_outcome(core, store, frames):
    core.receive("p", _query(frames, "dev-a", 31))
    core.flush()
    core.receive("p", frames.compact("dev-a", 31))
    assert core.flush() == Flushed()
    assert _replays(store) == [("dev-a", 31)]
