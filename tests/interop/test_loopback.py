"""tools/loopback.py on real ptys with pyserial, and edge/stream.py against the `cobs` package."""
from __future__ import annotations

import binascii
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial
from cobs import cobs
from hypothesis import given, settings, strategies as st

from qis.edge import stream
from qis.tools.sim.loopback import Loopback, LineCounters

ROOT = Path(__file__).resolve().parents[2]


def open_port(path: str) -> serial.Serial:
    return serial.Serial(path, 115200, timeout=0.05)


def read_exactly(port: serial.Serial, n: int, timeout: float = 20.0) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += port.read(n - len(out))
    assert len(out) == n, f"got {len(out)} of {n} bytes"
    return bytes(out)


def write_in_thread(port: serial.Serial, data: bytes) -> threading.Thread:
    """Write from a thread: the relay applies back-pressure, so a big write blocks until read."""
    t = threading.Thread(target=port.write, args=(data,))
    t.start()
    return t


def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def drained(loop: Loopback, direction: str, sent: int) -> bool:
    c = loop.counters()[direction]
    return c.received == sent and loop.pending() == 0 and c.relayed + c.dropped == sent


# ---- edge/stream.py against an independent COBS implementation --------------------------


def reference_record(payload: bytes) -> bytes:
    return b"\x00" + cobs.encode(payload + struct.pack("<I", binascii.crc32(payload))) + b"\x00"


def test_stream_vectors_match_the_cobs_package() -> None:
    vectors = json.loads((ROOT / "tests/vectors/stream.json").read_text())["vectors"]
    for v in vectors:
        payload = bytes.fromhex(v["payload"])
        assert reference_record(payload).hex() == v["wire"], v["name"]
        assert cobs.decode(bytes.fromhex(v["wire"])[1:-1])[:-4] == payload


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1024))
def test_stream_encode_equals_cobs_package(payload: bytes) -> None:
    wire = stream.encode(payload)
    assert wire == reference_record(payload)
    assert stream.Decoder().feed(wire) == [("frame", payload)]


# ---- the loopback -------------------------------------------------------------------------


def test_bytes_pass_intact_both_ways() -> None:
    data = bytes(range(256)) * 64  # every byte value: CR, LF, XON/XOFF, ^C, 0x00, 0xff
    with Loopback() as loop, open_port(loop.a_path) as a, open_port(loop.b_path) as b:
        assert loop.a_path.startswith("/dev/pts/") and loop.a_path != loop.b_path
        writer = write_in_thread(a, data)
        assert read_exactly(b, len(data)) == data
        writer.join()
        writer = write_in_thread(b, data[::-1])
        assert read_exactly(a, len(data)) == data[::-1]
        writer.join()
        wait_for(lambda: drained(loop, "b_to_a", len(data)))
        counters = loop.counters()
    for c in counters.values():
        assert (c.received, c.relayed, c.flipped, c.dropped) == (len(data), len(data), 0, 0)


def test_impaired_line_counters_and_decoder_recover_every_undamaged_record() -> None:
    rng = random.Random(42)
    payloads = [bytes([i % 256, i // 256]) + rng.randbytes(rng.randrange(200)) for i in range(300)]
    records = [stream.encode(p) for p in payloads]
    sent = b"".join(records)
    with Loopback(bit_flip_rate=0.002, drop_rate=0.002, seed=7, impair="a_to_b", keep_log=True) as loop, \
            open_port(loop.a_path) as a, open_port(loop.b_path) as b:
        writer = write_in_thread(a, sent)
        got = bytearray()
        deadline = time.monotonic() + 30
        while not (drained(loop, "a_to_b", len(sent)) and len(got) == loop.counters()["a_to_b"].relayed):
            assert time.monotonic() < deadline, "timed out"
            got += b.read(4096)
        writer.join()
        b.write(b"reply\x00\xff")  # the other direction is not impaired
        assert read_exactly(a, 7) == b"reply\x00\xff"
        wait_for(lambda: drained(loop, "b_to_a", 7))
        counters = loop.counters()
    c = counters["a_to_b"]
    assert c.received == len(sent) and c.relayed == len(got) and c.relayed + c.dropped == c.received
    assert c.flipped == sum(1 for _, kind in c.log if kind == "flip") > 0
    assert c.dropped == sum(1 for _, kind in c.log if kind == "drop") > 0
    assert counters["b_to_a"] == LineCounters(7, 7, 0, 0, [])
    # The bytes that arrived are exactly the sent ones minus the logged drops, with one
    # bit changed at each logged flip.
    kinds = dict(c.log)
    expected_positions = [i for i in range(len(sent)) if kinds.get(i) != "drop"]
    assert len(expected_positions) == len(got)
    for pos, byte in zip(expected_positions, got):
        diff = sent[pos] ^ byte
        assert (diff == 0) if kinds.get(pos) != "flip" else (bin(diff).count("1") == 1)
    # The stream decoder on the far side: no corrupt frame, every undamaged record back.
    dec = stream.Decoder()
    frames = [body for kind, body in dec.feed(got) if kind == "frame"]
    assert set(frames) <= set(payloads)
    start, undamaged = 0, []
    hits = sorted(kinds)
    for payload, rec in zip(payloads, records):
        end = start + len(rec)
        if not any(start <= h < end for h in hits):
            undamaged.append(payload)
        start = end
    assert 50 < len(undamaged) < len(payloads)
    assert set(undamaged) <= set(frames)
    assert dec.errors > 0


def test_same_seed_same_impairments() -> None:
    data = bytes(range(1, 256)) * 20
    logs = []
    for _ in range(2):
        with Loopback(bit_flip_rate=0.01, drop_rate=0.01, seed=3, keep_log=True) as loop, \
                open_port(loop.a_path) as a, open_port(loop.b_path) as b:
            writer = write_in_thread(a, data)
            wait_for(lambda: drained(loop, "a_to_b", len(data)))
            writer.join()
            logs.append(loop.counters()["a_to_b"].log)
            b.read(len(data))
    assert logs[0] == logs[1] and len(logs[0]) > 10


def test_a_party_closes_and_reopens_its_end() -> None:
    with Loopback() as loop:
        a = open_port(loop.a_path)
        b = open_port(loop.b_path)
        a.write(b"one")
        assert read_exactly(b, 3) == b"one"
        b.close()  # the gateway goes away; the device keeps talking
        a.write(b"into the void")
        wait_for(lambda: drained(loop, "a_to_b", 16))
        b = open_port(loop.b_path)  # pyserial flushes what queued while it was closed
        a.write(b"two")
        assert read_exactly(b, 3) == b"two"
        a.close()  # the device restarts
        b.write(b"while down")
        wait_for(lambda: drained(loop, "b_to_a", 10))
        a = open_port(loop.a_path)
        a.write(b"three")
        assert read_exactly(b, 5) == b"three"
        b.write(b"four")
        assert read_exactly(a, 4) == b"four"
        a.close()
        b.close()


def thread_cpu_seconds(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_idle_relay_does_not_spin() -> None:
    with Loopback() as loop:
        native_id = loop._thread.native_id
        port = open_port(loop.b_path)
        port.close()  # an end that was opened and closed again: no hang-up, no busy loop
        before = thread_cpu_seconds(native_id)
        time.sleep(1.0)
        assert thread_cpu_seconds(native_id) - before <= 0.05


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="bit_flip_rate must be within"):
        Loopback(bit_flip_rate=1.5)
    with pytest.raises(ValueError, match="drop_rate must be within"):
        Loopback(drop_rate=-0.1)
    with pytest.raises(ValueError, match="must not exceed 1"):
        Loopback(bit_flip_rate=0.6, drop_rate=0.6)
    with pytest.raises(ValueError, match="impair must be"):
        Loopback(impair="sideways")
    with pytest.raises(RuntimeError, match="not open"):
        Loopback().a_path


def test_links_are_made_and_removed_and_never_replace_a_file(tmp_path: Path) -> None:
    link_a, link_b = tmp_path / "dev-a", tmp_path / "dev-b"
    link_b.symlink_to("/nonexistent")  # a stale link from a killed run is replaced
    with Loopback(link_a=link_a, link_b=link_b) as loop:
        assert os.readlink(link_a) == loop.a_path and os.readlink(link_b) == loop.b_path
        with open_port(str(link_a)) as a, open_port(str(link_b)) as b:
            a.write(b"via links")
            assert read_exactly(b, 9) == b"via links"
    assert not link_a.exists() and not link_a.is_symlink() and not link_b.is_symlink()
    real = tmp_path / "real-file"
    real.write_text("keep me")
    with pytest.raises(FileExistsError, match="not a symlink"):
        Loopback(link_a=real).open()
    assert real.read_text() == "keep me"


def test_cli_runs_until_sigterm_and_prints_counters(tmp_path: Path) -> None:
    link_a, link_b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qis.tools.cli.main", "loopback", "--link-a", str(link_a), "--link-b", str(link_b),
         "--drop-rate", "0", "--bit-flip-rate", "0", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line_a, line_b = proc.stdout.readline(), proc.stdout.readline()
        assert line_a.startswith("A /dev/pts/") and str(link_a) in line_a
        assert line_b.startswith("B /dev/pts/") and str(link_b) in line_b
        with open_port(str(link_a)) as a, open_port(str(link_b)) as b:
            a.write(b"x" * 100)
            assert read_exactly(b, 100) == b"x" * 100
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out
    assert "a_to_b: received 100 relayed 100 flipped 0 dropped 0" in out
    assert "b_to_a: received 0 relayed 0 flipped 0 dropped 0" in out
    assert not link_a.is_symlink() and not link_b.is_symlink()


def test_cli_rejects_a_bad_rate() -> None:
    proc = subprocess.run([sys.executable, "-m", "qis.tools.cli.main", "loopback", "--drop-rate", "2"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "drop_rate must be within [0, 1]" in proc.stderr
