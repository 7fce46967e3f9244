"""edge.links.uart over a real pty cable: pyserial on CPython, stdin/stdout under MicroPython."""
import os
import subprocess

import serial

from mp import ROOT
from qis.edge import stream
from qis.edge.links.uart import UartLink
from qis.tools.emulate import device_env, micropython_binary, open_raw
from qis.tools.loopback import Loopback


def _read_frames(link: UartLink, want: int, decoder: stream.Decoder) -> list[bytes]:
    frames: list[bytes] = []
    for _ in range(200):
        data = link.read(50)
        if data:
            frames += [bytes(v) for kind, v in decoder.feed(bytes(data)) if kind == "frame"]
        if len(frames) >= want:
            break
    return frames


def test_pyserial_link_moves_records_both_ways():
    with Loopback(seed=3) as lb:
        a = UartLink(serial.Serial(lb.a_path, timeout=0))
        b = serial.Serial(lb.b_path, timeout=1)
        records = [bytes([i]) * (i * 37 % 600 + 1) for i in range(8)]
        for r in records:
            a.write(stream.encode(r))
        dec = stream.Decoder(1024)
        got: list[bytes] = []
        while len(got) < len(records):
            got += [bytes(v) for kind, v in dec.feed(b.read(b.in_waiting or 1)) if kind == "frame"]
        assert got == records
        b.write(stream.encode(b"ack-1") + stream.encode(b"ack-2"))
        assert _read_frames(a, 2, stream.Decoder(64)) == [b"ack-1", b"ack-2"]
        assert a.read(10) is None  # nothing more: a timeout, not an error
        assert not a.closed


def test_micropython_stdin_link_echoes_records():
    code = (
        "import sys\nfrom edge import stream\nfrom edge.links.uart import UartLink\n"
        "link = UartLink(sys.stdin.buffer, sys.stdout.buffer)\ndec = stream.Decoder(64)\nn = 0\n"
        "while n < 3:\n    data = link.read(1000)\n    if data is None:\n        continue\n"
        "    for kind, v in dec.feed(data):\n        if kind == 'frame':\n"
        "            link.write(stream.encode(b'echo:' + bytes(v)))\n            n += 1\n"
    )
    with Loopback(seed=4) as lb:
        fd = open_raw(lb.a_path)
        proc = subprocess.Popen([micropython_binary(), "-c", code], stdin=fd, stdout=fd, stderr=subprocess.PIPE,
                                env=device_env(), cwd=ROOT)
        os.close(fd)
        host = serial.Serial(lb.b_path, timeout=0)
        for msg in (b"one", b"two", b"three"):
            host.write(stream.encode(msg))
        link = UartLink(host)
        assert _read_frames(link, 3, stream.Decoder(64)) == [b"echo:one", b"echo:two", b"echo:three"]
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
