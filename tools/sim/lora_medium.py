"""An emulated LoRa radio medium that enforces the real limits, for tests and the demo.

Radios (the emulated SX127x modem under MicroPython, boards/unix/simradio.py, and the
emulated AT-command modem, tools/sim/lora_at.py) connect to a unix socket and speak a
small binary protocol; each message is a type byte, a 2-byte big-endian length, a body:

  radio -> medium  C  config: freq kHz (u32), SF (u8), BW kHz (u16), coding rate 5..8 (u8),
                      preamble (u16), address (u16), name (the rest, UTF-8)
                   T  transmit: the payload
  medium -> radio  D  transmission over: status (u8: 0 sent, 1 refused by the duty cycle,
                      2 too long for the SF, 3 not configured), airtime in us (u32)
                   R  received: sender's address (u16), RSSI dBm (i16), SNR dB (i8), payload

What the medium enforces, in emulated time (real time x time_scale):
- the payload limit per spreading factor and the time on air, from edge/airtime.py (the
  Semtech formula): a transmission occupies its channel for its time on air, and the
  sender's D comes when it is over (a modem's send blocks that long);
- the EU868 duty cycle per transmitter and sub-band: a transmission that starts before
  the sender's off time has passed is refused (D status 1) and counted as a violation;
- collisions: two transmissions that overlap in time on one frequency are both lost to
  every receiver (no capture effect);
- half duplex: a radio receives nothing that ends while it is transmitting or that
  started while it was;
- loss: each (packet, receiver) is lost with probability `loss`, from a seeded generator.
A radio receives what is sent on its frequency with its SF and bandwidth.
"""
from __future__ import annotations

import argparse
import heapq
import os
import random
import selectors
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from qis.edge import airtime
from qis.edge.errors import ConfigError

SENT, DUTY, TOO_LONG, UNCONFIGURED = 0, 1, 2, 3
TOLERANCE_US = 2000  # emulated us of slack on the duty cycle (clock reading jitter)


@dataclass
class Radio:
    sock: socket.socket
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    freq: int = 0
    sf: int = 0
    bw: int = 0
    cr: int = 5
    preamble: int = 8
    address: int = 0
    name: str = ""
    tx_until: float = -1.0  # emulated us when its current transmission ends
    tx_since: float = -1.0
    free_at: dict = field(default_factory=dict)  # sub-band divisor -> emulated us it may send again


@dataclass
class Transmission:
    sender: Radio
    freq: int
    sf: int
    bw: int
    start: float
    end: float
    payload: bytes
    airtime: int


@dataclass
class MediumCounters:
    transmissions: int = 0
    delivered: int = 0
    lost: int = 0  # random loss, per receiver
    collided: int = 0  # transmissions lost to an overlap
    half_duplex: int = 0  # receptions missed because the receiver was transmitting
    violations: int = 0  # transmissions refused by the duty cycle
    too_long: int = 0
    airtime_us: dict = field(default_factory=dict)  # radio name -> emulated us on air


def frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">H", len(body)) + body


class Medium:
    """The medium, served on a unix socket by a thread. Use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, loss: float = 0.0, time_scale: float = 1.0,
                 seed: int | None = None) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be within [0, 1), not {loss!r}")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, not {time_scale!r}")
        self.path = str(path)
        self.loss = loss
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        self.counters = MediumCounters()
        self._radios: dict[int, Radio] = {}
        self._active: list[Transmission] = []  # on air or recently ended (for overlap checks)
        self._ends: list[tuple[float, int, Transmission]] = []  # heap of transmission ends
        self._seq = 0
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._error: BaseException | None = None

    def now_us(self) -> float:
        """Emulated microseconds since the medium started."""
        return (time.monotonic() - self._t0) * 1e6 * self.time_scale

    # -- life cycle ---------------------------------------------------------------------

    def open(self) -> Medium:
        Path(self.path).unlink(missing_ok=True)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._server.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="qis-lora-medium", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join()
            self._thread = None
            os.close(self._wake_r)
            os.close(self._wake_w)
            for radio in self._radios.values():
                radio.sock.close()
            self._radios.clear()
            self._server.close()
            Path(self.path).unlink(missing_ok=True)
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("LoRa medium thread failed") from error

    def __enter__(self) -> Medium:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def snapshot(self) -> MediumCounters:
        with self._lock:
            c = self.counters
            return MediumCounters(c.transmissions, c.delivered, c.lost, c.collided, c.half_duplex, c.violations,
                                  c.too_long, dict(c.airtime_us))

    # -- the thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self._server, selectors.EVENT_READ, "accept")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while True:
                timeout = None
                if self._ends:
                    timeout = max(0.0, (self._ends[0][0] - self.now_us()) / 1e6 / self.time_scale)
                for key, events in sel.select(timeout):
                    if key.data == "wake":
                        return
                    if key.data == "accept":
                        conn, _ = self._server.accept()
                        conn.setblocking(False)
                        radio = Radio(conn)
                        self._radios[conn.fileno()] = radio
                        sel.register(conn, selectors.EVENT_READ, radio)
                        continue
                    radio = key.data
                    if events & selectors.EVENT_READ and not self._read(radio):
                        sel.unregister(radio.sock)
                        del self._radios[radio.sock.fileno()]
                        radio.sock.close()
                        continue
                    if events & selectors.EVENT_WRITE:
                        self._flush(radio)
                self._finish(self.now_us())
                for radio in self._radios.values():
                    want = selectors.EVENT_READ | (selectors.EVENT_WRITE if radio.outbox else 0)
                    if sel.get_key(radio.sock).events != want:
                        sel.modify(radio.sock, want, radio)
        except BaseException as exc:  # surfaced by close()
            self._error = exc
        finally:
            sel.close()

    def _read(self, radio: Radio) -> bool:
        try:
            data = radio.sock.recv(4096)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        radio.inbox += data
        while len(radio.inbox) >= 3:
            n = struct.unpack_from(">H", radio.inbox, 1)[0]
            if len(radio.inbox) < 3 + n:
                break
            kind, body = bytes(radio.inbox[:1]), bytes(radio.inbox[3:3 + n])
            del radio.inbox[:3 + n]
            if kind == b"C":
                self._configure(radio, body)
            elif kind == b"T":
                self._transmit(radio, body)
            else:
                return False  # not our protocol: drop the radio
        return True

    def _send(self, radio: Radio, data: bytes) -> None:
        radio.outbox += data
        self._flush(radio)

    def _flush(self, radio: Radio) -> None:
        try:
            n = radio.sock.send(radio.outbox)
        except BlockingIOError:
            return
        except OSError:
            radio.outbox.clear()
            return
        del radio.outbox[:n]

    def _configure(self, radio: Radio, body: bytes) -> None:
        radio.freq, radio.sf, radio.bw, radio.cr, radio.preamble, radio.address = struct.unpack_from(">IBHBHH", body)
        radio.name = body[12:].decode(errors="replace") or f"radio-{radio.sock.fileno()}"

    def _transmit(self, radio: Radio, payload: bytes) -> None:
        now = self.now_us()
        if not radio.sf:
            self._send(radio, frame(b"D", struct.pack(">BI", UNCONFIGURED, 0)))
            return
        try:
            too_long = len(payload) > airtime.max_payload(radio.sf)
            divisor = airtime.duty_divisor(radio.freq)
            air = airtime.time_on_air_us(len(payload), radio.sf, radio.bw, radio.cr, radio.preamble)
        except ConfigError:
            too_long, divisor, air = True, 1, 0
        with self._lock:
            if too_long:
                self.counters.too_long += 1
                self._send(radio, frame(b"D", struct.pack(">BI", TOO_LONG, 0)))
                return
            if now + TOLERANCE_US < radio.free_at.get(divisor, -1.0) or now < radio.tx_until:
                self.counters.violations += 1
                self._send(radio, frame(b"D", struct.pack(">BI", DUTY, air)))
                return
            self.counters.transmissions += 1
            self.counters.airtime_us[radio.name] = self.counters.airtime_us.get(radio.name, 0) + air
        tx = Transmission(radio, radio.freq, radio.sf, radio.bw, now, now + air, payload, air)
        radio.tx_since, radio.tx_until = now, now + air
        radio.free_at[divisor] = now + air * divisor  # end of air + air x (divisor - 1)
        self._active.append(tx)
        self._seq += 1
        heapq.heappush(self._ends, (tx.end, self._seq, tx))

    def _finish(self, now: float) -> None:
        """Deliver the transmissions that are over."""
        while self._ends and self._ends[0][0] <= now:
            _, _, tx = heapq.heappop(self._ends)
            self._send(tx.sender, frame(b"D", struct.pack(">BI", SENT, tx.airtime)))
            collided = any(o is not tx and o.freq == tx.freq and o.start < tx.end and tx.start < o.end
                           for o in self._active)
            with self._lock:
                if collided:
                    self.counters.collided += 1
                for radio in list(self._radios.values()):
                    if radio is tx.sender or (radio.freq, radio.sf, radio.bw) != (tx.freq, tx.sf, tx.bw):
                        continue
                    if collided:
                        continue
                    if radio.tx_until > tx.start and radio.tx_since < tx.end:
                        self.counters.half_duplex += 1
                        continue
                    if self.loss and self.rng.random() < self.loss:
                        self.counters.lost += 1
                        continue
                    self.counters.delivered += 1
                    rssi, snr = -60 - self.rng.randrange(40), 10 - self.rng.randrange(15)
                    self._send(radio, frame(b"R", struct.pack(">Hhb", tx.sender.address, rssi, snr) + tx.payload))
        # Keep what may still overlap a transmission on air (the longest is under 10 s).
        horizon = now - 20e6
        self._active = [t for t in self._active if t.end > horizon]


# -- `qis lora medium` ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", required=True, type=Path, help="unix socket the radios connect to")
    parser.add_argument("--gateway-modem", type=Path, metavar="LINK",
                        help="also emulate the gateway's AT modem: a symlink to its pty (for qis gateway run --lora)")
    parser.add_argument("--loss", type=float, default=0.0, help="probability a packet is lost, per receiver")
    parser.add_argument("--time-scale", type=float, default=1.0, help="emulated seconds per real second")
    parser.add_argument("--seed", type=int, default=None, help="seed of the losses (repeatable runs)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; print the paths at start and the counters at exit."""
    from ..errors import UsageError
    from .lora_at import AtModem

    try:
        medium = Medium(args.socket, loss=args.loss, time_scale=args.time_scale, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stop = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before the threads exist: they inherit it
    with medium:
        print(f"medium {medium.path}", flush=True)
        modem = AtModem(medium.path, "gateway", args.gateway_modem).open() if args.gateway_modem else None
        if modem is not None:
            print(f"gateway modem {modem.path} (link {args.gateway_modem})", flush=True)
        signum = signal.sigwait(stop)
        if modem is not None:
            modem.close()
        counters = medium.snapshot()
    signal.pthread_sigmask(signal.SIG_SETMASK, old)
    print(f"stopped by {signal.Signals(signum).name}: {counters}")
    return 0
