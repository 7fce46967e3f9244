"""GatewayCore: stream in per port, ACKs out per port only after the commit."""
from __future__ import annotations

import sqlite3

import pytest

from qis.gateway.core import GatewayCore
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
    stream_a = frames.wire(*a)
    # Split the streams at awkward places: records cross chunk boundaries.
    core.receive("ttyA", stream_a[:30])
    core.receive("ttyB", frames.wire(*b))
    core.receive("ttyA", stream_a[30:])
    assert committed(store, "SELECT COUNT(*) FROM outcomes") == [(0,)]
    acks = core.flush()
    assert sorted(acks) == sorted(
        [("ttyA", frames.wire(seal_ack(devices["dev-a"], c))) for c in (1, 2, 3)]
        + [("ttyB", frames.wire(seal_ack(devices["dev-b"], c))) for c in (7, 8)])
    assert committed(store, "SELECT device, counter, port FROM outcomes ORDER BY device, counter") == [
        ("dev-a", 1, "ttyA"), ("dev-a", 2, "ttyA"), ("dev-a", 3, "ttyA"), ("dev-b", 7, "ttyB"), ("dev-b", 8, "ttyB")]
    assert core.flush() == []  # nothing new, nothing re-sent
    assert core.stats["stored"] == 5 and core.stats["acks_sent"] == 5


def test_duplicate_gets_the_same_ack_and_no_second_row(core, store, frames, devices):
    data = frames.compact("dev-a", 4)
    core.receive("p", frames.wire(data))
    (first,) = core.flush()
    core.receive("p", frames.wire(data))
    (second,) = core.flush()
    assert first == second == ("p", frames.wire(seal_ack(devices["dev-a"], 4)))
    assert committed(store, "SELECT counter, duplicates FROM outcomes") == [(4, 1)]
    assert core.stats["duplicate"] == 1


def test_authenticated_invalid_frame_dead_lettered_once_and_acked(core, store, frames, devices):
    bad = frames.sealed_fields("dev-b", 9, [1, 1] + frames.compact_fields()[2:6] + [256, frames.COMPACT_FP])
    for _ in range(3):
        core.receive("p", frames.wire(bad))
        assert core.flush() == [("p", frames.wire(seal_ack(devices["dev-b"], 9)))]
    assert committed(store, "SELECT reason, device, counter, consumed, frame FROM dead_letters") == [
        ("confidence must be an integer in 0..255, got 256", "dev-b", 9, 1, bad)]
    assert committed(store, "SELECT COUNT(*) FROM outcomes") == [(0,)]


def test_unauthenticated_frame_is_not_acked(core, store, frames, devices):
    data = bytearray(frames.compact("dev-a", 5))
    data[30] ^= 0x10
    core.receive_frame("lora", bytes(data))
    assert core.flush() == []
    assert committed(store, "SELECT COUNT(*) FROM dead_letters") == [(0,)]  # counted, not stored
    assert committed(store, "SELECT port, code, detail, count FROM refusals") == [("lora", "auth", "dev-a", 1)]
    assert committed(store, "SELECT port, code, frame FROM refusal_samples") == [("lora", "auth", bytes(data))]


def test_replayed_counter_with_other_content(core, store, frames):
    core.receive("p", frames.wire(frames.compact("dev-a", 6, label=1)))
    assert len(core.flush()) == 1
    replay = frames.compact("dev-a", 6, label=2)
    core.receive("p", frames.wire(replay))
    assert core.flush() == []
    assert committed(store, "SELECT label FROM outcomes") == [(1,)]
    ((reason, device, counter, consumed, frame),) = committed(
        store, "SELECT reason, device, counter, consumed, frame FROM dead_letters")
    assert reason.startswith("replayed counter 6 of dev-a with different content")
    assert (device, counter, consumed, frame) == ("dev-a", 6, 0, replay)


def test_line_noise_then_the_next_frame_is_stored(core, store, frames, devices):
    hit, next_ = frames.compact("dev-a", 1), frames.compact("dev-a", 2)
    record = bytearray(frames.wire(hit))
    record[20] ^= 0x04 if record[20] != 0x04 else 0x08  # a flipped bit, never turned into a delimiter
    core.receive("p", bytes(record) + frames.wire(next_))
    assert core.flush() == [("p", frames.wire(seal_ack(devices["dev-a"], 2)))]
    assert committed(store, "SELECT code, detail, count FROM refusals") == [("stream", "crc mismatch", 1)]
    assert committed(store, "SELECT counter FROM outcomes") == [(2,)]
    assert core.stats["stream_errors"] == 1


def test_garbage_and_oversized_records_never_raise(core, store, frames, devices):
    core.receive("p", b"\x00" + b"\x41" * 2000 + b"\x00")  # no delimiter for 2000 bytes
    core.receive("p", bytes(range(1, 256)) * 3)
    core.receive("p", frames.wire(b"short"))  # a good record holding no frame
    core.receive("p", frames.wire(frames.compact("dev-b", 3)))
    assert core.flush() == [("p", frames.wire(seal_ack(devices["dev-b"], 3)))]
    counts = dict(((code, detail), n) for code, detail, n in committed(store, "SELECT code, detail, count FROM refusals"))
    assert counts[("stream", "too long")] >= 1 and counts[("size", "")] == 1
    assert committed(store, "SELECT COUNT(*) FROM dead_letters") == [(0,)]


def test_log_lines_carry_no_key_material(core, frames, devices, caplog):
    bad = frames.sealed_fields("dev-a", 9, [2] + frames.compact_fields()[1:])
    with caplog.at_level("INFO", logger="qis.gateway"):
        core.receive("p", frames.wire(bad, frames.compact("dev-a", 10), frames.compact("dev-a", 10, label=7)))
        core.flush()
    assert "unsupported version 2" in caplog.text and "replayed counter 10" in caplog.text
    for d in devices.values():
        assert d.key.hex() not in caplog.text and d.key.hex().upper() not in caplog.text
        assert repr(d.key) not in caplog.text


def _replays(store) -> list:
    return committed(store, "SELECT device, counter FROM dead_letters WHERE reason LIKE 'replayed counter%'")


def test_counter_of_a_consumed_dead_letter_cannot_be_reused_by_an_outcome(core, store, frames):
    bad = frames.sealed_fields("dev-a", 11, [1, 1] + frames.compact_fields()[2:6] + [256, frames.COMPACT_FP])
    core.receive("p", frames.wire(bad))
    assert len(core.flush()) == 1  # refused but recorded: acknowledged
    core.receive("p", frames.wire(frames.compact("dev-a", 11)))  # a valid frame under the same nonce
    assert core.flush() == []
    assert committed(store, "SELECT COUNT(*) FROM outcomes") == [(0,)]
    assert _replays(store) == [("dev-a", 11)]


def test_counter_of_an_outcome_cannot_be_reused_by_an_invalid_frame(core, store, frames):
    core.receive("p", frames.wire(frames.compact("dev-a", 12)))
    assert len(core.flush()) == 1
    bad = frames.sealed_fields("dev-a", 12, [1, 1] + frames.compact_fields()[2:6] + [256, frames.COMPACT_FP])
    core.receive("p", frames.wire(bad))
    assert core.flush() == []
    assert _replays(store) == [("dev-a", 12)]
    assert committed(store, "SELECT counter, duplicates FROM outcomes") == [(12, 0)]


def test_two_different_invalid_frames_under_one_counter(core, store, frames):
    first = frames.sealed_fields("dev-a", 13, [1, 1] + frames.compact_fields()[2:6] + [256, frames.COMPACT_FP])
    second = frames.sealed_fields("dev-a", 13, [2, 1] + frames.compact_fields()[2:8])
    core.receive("p", frames.wire(first))
    assert len(core.flush()) == 1
    core.receive("p", frames.wire(second))
    assert core.flush() == []
    assert _replays(store) == [("dev-a", 13)]
