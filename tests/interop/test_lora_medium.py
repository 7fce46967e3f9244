"""The emulated LoRa medium enforces the real limits (time on air, duty cycle, payload per
SF, collisions, half duplex, loss), and the emulated AT modem speaks its commands over a
real pty: what the LoRa tests and the demo run on."""
from __future__ import annotations

import socket
import struct
import time

import pytest
import serial

from qis.edge import airtime
from qis.tools.sim.lora_at import AtModem
from qis.tools.sim.lora_medium import DUTY, SENT, TOO_LONG, Medium

SCALE = 50.0


class Radio:
    """A bare client of the medium's protocol."""

    def __init__(self, medium: Medium, name: str, freq: int = 868100, sf: int = 7, address: int = 1) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(medium.path)
        self.buf = b""
        self.configure(freq, sf, address, name)

    def configure(self, freq: int, sf: int = 7, address: int = 1, name: str = "") -> None:
        body = struct.pack(">IBHBHH", freq, sf, 125, 5, 8, address) + name.encode()
        self.sock.sendall(b"C" + struct.pack(">H", len(body)) + body)

    def transmit(self, payload: bytes) -> None:
        self.sock.sendall(b"T" + struct.pack(">H", len(payload)) + payload)

    def messages(self, seconds: float, until: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """What the medium sent within seconds (or until a message of kind `until`)."""
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + seconds
        while True:
            while len(self.buf) >= 3 and len(self.buf) >= 3 + struct.unpack_from(">H", self.buf, 1)[0]:
                n = struct.unpack_from(">H", self.buf, 1)[0]
                out.append((self.buf[:1], self.buf[3:3 + n]))
                self.buf = self.buf[3 + n:]
                if until is not None and out[-1][0] == until:
                    return out
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            self.sock.settimeout(left)
            try:
                self.buf += self.sock.recv(4096)
            except TimeoutError:
                return out

    def done(self, seconds: float = 5.0) -> tuple[int, int]:
        for kind, body in self.messages(seconds, until=b"D"):
            if kind == b"D":
                return struct.unpack(">BI", body)
        raise AssertionError("no D message")


@pytest.fixture
def medium(tmp_path):
    with Medium(tmp_path / "m.sock", time_scale=SCALE, seed=3) as m:
        yield m


def test_a_packet_takes_its_time_on_air_and_reaches_the_listeners_of_its_channel(medium):
    a, b, other_channel = Radio(medium, "a"), Radio(medium, "b", address=2), Radio(medium, "c", freq=868300)
    payload = bytes(range(51))
    t0 = time.monotonic()
    a.transmit(payload)
    status, air = a.done()
    took = time.monotonic() - t0
    assert (status, air) == (SENT, airtime.time_on_air_us(51, 7))
    assert took >= air / 1e6 / SCALE * 0.9  # the sender's D comes when the packet is off the air
    got = [body for kind, body in b.messages(0.3) if kind == b"R"]
    assert len(got) == 1 and got[0][5:] == payload and struct.unpack(">H", got[0][:2])[0] == 1
    assert other_channel.messages(0.1) == []


def test_duty_cycle_and_payload_limits_are_enforced(medium):
    a = Radio(medium, "a")
    a.transmit(bytes(51))
    assert a.done()[0] == SENT
    a.transmit(bytes(51))  # at once: the 1 % off time (99 x 102.7 ms / 50 = 203 ms) is not over
    assert a.done()[0] == DUTY
    time.sleep(99 * airtime.time_on_air_us(51, 7) / 1e6 / SCALE + 0.02)
    a.transmit(bytes(51))
    assert a.done()[0] == SENT
    b = Radio(medium, "b", sf=12)
    b.transmit(bytes(60))  # 59 bytes at most at SF12
    assert b.done()[0] == TOO_LONG
    c = Radio(medium, "c", freq=869525)  # the 10 % sub-band: 9 x off
    c.transmit(bytes(34))
    assert c.done()[0] == SENT
    time.sleep(9 * airtime.time_on_air_us(34, 7) / 1e6 / SCALE + 0.02)
    c.transmit(bytes(34))
    assert c.done()[0] == SENT
    counters = medium.snapshot()
    assert (counters.violations, counters.too_long, counters.transmissions) == (1, 1, 4)


def test_overlapping_transmissions_collide_and_a_transmitter_hears_nothing(medium):
    a, b, listener = Radio(medium, "a"), Radio(medium, "b", address=2), Radio(medium, "l", address=3)
    a.transmit(b"x" * 51)
    b.transmit(b"y" * 51)  # overlaps a on the same frequency
    a.done(), b.done()
    assert [k for k, _ in listener.messages(0.3) if k == b"R"] == []
    assert medium.snapshot().collided == 2
    time.sleep(0.25)
    # b transmits while a's packet is on the air: b misses a's packet (half duplex)
    a.transmit(b"x" * 200)
    b.transmit(b"z" * 5)
    a.done(), b.done()
    assert medium.snapshot().half_duplex >= 1 or medium.snapshot().collided == 4


def test_loss_is_per_receiver_and_seeded(tmp_path):
    with Medium(tmp_path / "l.sock", time_scale=1000, loss=0.2, seed=11) as m:
        a = Radio(m, "a")
        receivers = [Radio(m, f"r{i}", address=10 + i) for i in range(4)]
        time.sleep(0.1)  # every receiver's configuration reaches the medium first
        for _ in range(25):
            a.transmit(b"p")
            a.done()
            time.sleep(99 * airtime.time_on_air_us(1, 7) / 1e6 / 1000 + 0.003)
        for r in receivers:
            r.messages(0.05)
        c = m.snapshot()
    assert c.delivered + c.lost == 100 and 8 <= c.lost <= 35, c


def test_the_emulated_at_modem_answers_its_commands_on_a_pty(medium):
    with AtModem(medium.path, "gw") as modem, serial.Serial(modem.path, timeout=2) as port:
        listener = Radio(medium, "l", freq=869525, address=4)

        def ask(cmd: bytes) -> bytes:
            port.write(cmd + b"\r\n")
            return port.read_until(b"\r\n")

        assert ask(b"AT") == b"+OK\r\n"
        assert ask(b"AT+ADDRESS=9") == b"+OK\r\n"
        assert ask(b"AT+PARAMETER=7,7,1,8") == b"+OK\r\n"
        assert ask(b"AT+BAND=869525000") == b"+OK\r\n"
        assert ask(b"AT+BAND?") == b"+BAND=869525000\r\n"
        assert ask(b"AT+FOO=1") == b"+ERR=4\r\n"
        frame = b"\r\n,," + bytes(30)  # binary-safe: read by its length
        assert ask(b"AT+SEND=0,%d," % len(frame) + frame) == b"+OK\r\n"
        got = [body for kind, body in listener.messages(0.3) if kind == b"R"]
        assert got and got[0][5:] == frame and struct.unpack(">H", got[0][:2])[0] == 9
        assert ask(b"AT+SEND=0,2,abc") == b"+ERR=5\r\n"  # the data is not followed by CR LF
        listener.configure(869525, address=4)
        listener.transmit(b"hello,\r\nworld")
        listener.done()
        assert port.read_until(b"\r\n", 64).startswith(b"+RCV=4,13,hello,\r\n")
