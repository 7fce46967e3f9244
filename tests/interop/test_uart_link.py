"""edge.links.uart over a real pty cable: pyserial on CPython, stdin/stdout under MicroPython.
The other end is the gateway's own record framing (gateway/ingest/serial.py)."""
import os
import subprocess

import serial

from mp import ROOT
from qis.edge.links.uart import UartLink
from qis.gateway.ingest.serial import RecordDecoder, encode_record
from qis.tools.sim import micropython
from qis.tools.sim.emulate import open_raw
from qis.tools.sim.loopback import Loopback


def _receive(link: UartLink, want: int) -> list[bytes]:
    frames: list[bytes] = []
    for _ in range(200):
        frames += [bytes(f) for f in link.receive(50)]
        if len(frames) >= want:
            break
    return frames


def test_pyserial_link_moves_frames_both_ways():
    with Loopback(seed=3) as lb:
        a = UartLink(serial.Serial(lb.a_path, timeout=0), max_send=600)
        b = serial.Serial(lb.b_path, timeout=1)
        frames = [bytes([i]) * (i * 37 % 600 + 1) for i in range(8)]
        for f in frames:
            a.send(f)
        dec = RecordDecoder()
        got: list[bytes] = []
        while len(got) < len(frames):
            got += [v for kind, v in dec.feed(b.read(b.in_waiting or 1)) if kind == "frame"]
        assert got == frames
        b.write(encode_record(b"ack-1") + b"\x00\x05noise\x00" + encode_record(b"ack-2"))
        assert _receive(a, 2) == [b"ack-1", b"ack-2"]  # the damaged record in between is dropped
        assert a.receive(10) == []  # nothing more: a timeout, not an error
        assert not a.closed


def test_micropython_stdin_link_echoes_frames():
    code = (
        "import sys\nfrom edge.links.uart import UartLink\n"
        "link = UartLink(sys.stdin.buffer, sys.stdout.buffer)\nn = 0\n"
        "while n < 3:\n    for f in link.receive(1000):\n"
        "        link.send(b'echo:' + bytes(f))\n        n += 1\n"
    )
    with Loopback(seed=4) as lb:
        fd = open_raw(lb.a_path)
        proc = micropython.popen(["-c", code], stdin=fd, stdout=fd, stderr=subprocess.PIPE, cwd=ROOT)
        os.close(fd)
        host = serial.Serial(lb.b_path, timeout=0)
        for msg in (b"one", b"two", b"three"):
            host.write(encode_record(msg))
        link = UartLink(host)
        assert _receive(link, 3) == [b"echo:one", b"echo:two", b"echo:three"]
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
