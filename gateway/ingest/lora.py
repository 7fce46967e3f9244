"""LoRa ingest: a USB-serial LoRa modem (RYLR998-class AT commands, pyserial) feeding the
core; acknowledgements go back as multi-ACK downlinks under the gateway's duty cycle.

The modem listens on the uplink frequency; +RCV lines carry the devices' frames (binary
data read by its length). A downlink switches the modem to the downlink frequency (EU868
RX2, 869.525 MHz, 10 % duty), sends AT+SEND=0 (broadcast: the frame's key id addresses
it, and only that device's key opens it) and switches back.

Rules:
- One downlink acknowledges up to 33 counters of one device (the multi-ACK, type 4,
  docs/PROTOCOL.md): one ACK per uplink would spend the gateway's airtime budget on a
  fraction of the devices it can serve. Committed counters wait per device until
  `ack_batch` of them are pending or the oldest has waited `ack_delay_s`; then the device
  with the oldest pending counter gets the next downlink the duty cycle allows.
- A counter is only ever acknowledged after the commit that made it durable (the core's
  Flushed.acked); a duplicate uplink is committed as a duplicate and acknowledged again.
- The modem's output is parsed strictly (AtReader); what is not a +RCV frame, +OK or
  +ERR is counted as refused under code "at", never stored.
- Commands go one at a time and wait for +OK or +ERR (5 s at most); the modem port is
  reopened after an error, as the serial ingest does.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque

import serial

from qis.edge import airtime
from qis.edge.compat import ticks_ms
from qis.edge.frame import MULTI_ACK_SPAN

from ..core import Flushed, GatewayCore
from ..keys import DeviceKey
from ..verify import seal_multi_ack
from .commit import Committer

log = logging.getLogger("qis.gateway.lora")
_BW_CODE = {125: 7, 250: 8, 500: 9}
_RCV = re.compile(rb"\+RCV=(\d{1,5}),(\d{1,3}),")
_TAIL = re.compile(rb",(-?\d{1,4}),(-?\d{1,4})\r\n")
_LINE_MAX = 64
_ANSWERS_WAITING = 32
_COMMAND_S = 5.0


def uplink_period_s(sf: int, bw_khz: int = 125, coding_rate: int = 5, preamble: int = 8,
                    uplink_khz: int = 868100) -> float:
    """The shortest time between two compact uplinks of one device under the duty cycle."""
    air = airtime.time_on_air_us(51, sf, bw_khz, coding_rate, preamble)
    return air * airtime.duty_divisor(uplink_khz) / 1e6


class LoraOptions:
    def __init__(self, path: str, sf: int = 7, bw_khz: int = 125, coding_rate: int = 5, preamble: int = 8,
                 uplink_khz: int = 868100, downlink_khz: int = 869525, time_scale: float = 1.0,
                 ack_batch: int = 4, ack_delay_s: float | None = None, address: int = 0, network: int = 18) -> None:
        """ack_delay_s defaults to three of a device's shortest uplink periods at this SF
        (a compact frame, the uplink sub-band's duty cycle): a device sending as fast as
        it may gets about ack_batch counters per downlink, a slower one waits no longer."""
        airtime.time_on_air_us(0, sf, bw_khz, coding_rate, preamble)  # ConfigError on a bad combination
        airtime.duty_divisor(downlink_khz)
        if ack_delay_s is None:
            ack_delay_s = 3 * uplink_period_s(sf, bw_khz, coding_rate, preamble, uplink_khz)
        self.path, self.sf, self.bw, self.cr, self.preamble = path, sf, bw_khz, coding_rate, preamble
        self.uplink_khz, self.downlink_khz = uplink_khz, downlink_khz
        self.time_scale = time_scale
        self.ack_batch, self.ack_delay_s = ack_batch, ack_delay_s
        self.address, self.network = address, network


class AtReader:
    """The gateway's own strict reader of AT module output: events ("rcv", address,
    payload), ("ok",), ("err", code), ("other", line) and ("error", reason)."""

    def __init__(self, max_payload: int = 255) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple]:
        self._buf += data
        events: list[tuple] = []
        while self._buf:
            if self._buf.startswith(b"+RCV="):
                m = _RCV.match(self._buf)
                if m is None:
                    if len(self._buf) > 16 or (len(self._buf) > 5 and not re.fullmatch(rb"\+RCV=[\d,]*", self._buf)):
                        events.append(self._skip("+RCV head is not <address>,<length>,"))
                        continue
                    break
                addr, length = int(m.group(1)), int(m.group(2))
                if length > self.max_payload or addr > 65535:
                    events.append(self._skip("+RCV length or address out of range"))
                    continue
                start = m.end()
                tail = _TAIL.match(self._buf, start + length)
                if tail is None:
                    if len(self._buf) < start + length + 14 and b"\n" not in self._buf[start + length:]:
                        break  # not all here yet
                    events.append(self._skip("+RCV does not end in ,<rssi>,<snr> CR LF"))
                    continue
                events.append(("rcv", addr, bytes(self._buf[start:start + length])))
                del self._buf[:tail.end()]
                continue
            nl = self._buf.find(b"\r\n")
            if nl < 0:
                if len(self._buf) > _LINE_MAX:
                    events.append(self._skip("line longer than 64 bytes"))
                    continue
                break
            line = bytes(self._buf[:nl])
            del self._buf[:nl + 2]
            if line == b"+OK":
                events.append(("ok",))
            elif re.fullmatch(rb"\+ERR=\d{1,3}", line):
                events.append(("err", int(line[5:])))
            elif re.fullmatch(rb"\+[A-Z]+=[ -~]{0,48}|\+READY|", line):
                events.append(("other", line))
            else:
                events.append(("error", "unknown response"))
        return events

    def _skip(self, reason: str) -> tuple:
        nl = self._buf.find(b"\n", 1)
        del self._buf[: nl + 1 if nl >= 0 else len(self._buf)]
        return ("error", reason)


class LoraIngest:
    """One LoRa modem on a serial port, feeding the core under port = its path."""

    def __init__(self, core: GatewayCore, options: LoraOptions, committer: Committer) -> None:
        self.core = core
        self.options = options
        self.port = options.path
        self.committer = committer
        committer.links.append(self)
        self._pending: dict[DeviceKey, dict[int, float]] = {}  # key that sealed -> counter -> when committed
        self._commands: deque[tuple[bytes, bytes, str]] = deque()  # (command, data, purpose)
        # Answer frames waiting for the downlink budget, bounded: a device that asks faster
        # than the duty cycle lets the gateway answer loses the oldest, and asks again (a
        # repeated query gets the stored answer's same bytes).
        self._answers: deque[bytes] = deque(maxlen=_ANSWERS_WAITING)
        self._waiting: tuple[bytes, float, str] | None = None  # command in flight, its deadline
        self._duty = airtime.DutyCycle(options.downlink_khz, options.time_scale, jitter=False)
        self._reader = AtReader()
        self._serial: serial.Serial | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._sent_at = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._open()
        self._tick()

    def _open(self) -> None:
        o = self.options
        try:
            self._serial = serial.Serial(o.path, 115200, timeout=0, write_timeout=2)
        except (serial.SerialException, OSError) as exc:
            log.warning("cannot open LoRa modem %s (%s); retrying", o.path, exc)
            self._serial = None
            return
        self._loop.add_reader(self._serial.fileno(), self._on_readable)
        self._reader = AtReader()
        self._commands.clear()
        self._waiting = None
        for command in (b"AT", b"AT+ADDRESS=%d" % o.address, b"AT+NETWORKID=%d" % o.network,
                        b"AT+PARAMETER=%d,%d,%d,%d" % (o.sf, _BW_CODE[o.bw], o.cr - 4, o.preamble),
                        b"AT+BAND=%d" % (o.uplink_khz * 1000)):
            self._commands.append((command, b"", "setup"))
        log.info("LoRa modem on %s: SF%d BW%d, uplink %d kHz, downlink %d kHz", o.path, o.sf, o.bw, o.uplink_khz,
                 o.downlink_khz)

    def _close_port(self, why: str) -> None:
        if self._serial is not None:
            self._loop.remove_reader(self._serial.fileno())
            self._serial.close()
            self._serial = None
            self.core.stats["port_resets"] += 1
            log.warning("LoRa modem %s closed (%s); reopening", self.options.path, why)

    def _tick(self) -> None:
        """Reopen a lost modem, time out a silent command, send what is due."""
        if self._serial is None:
            self._open()
        elif self._waiting is not None and time.monotonic() > self._waiting[1]:
            log.error("LoRa modem did not answer %r", self._waiting[0][:16])
            self._close_port("no answer to a command")
        else:
            self._next_command()
        self._ticker = self._loop.call_later(0.02, self._tick)

    def _on_readable(self) -> None:
        try:
            data = self._serial.read(4096)
        except (serial.SerialException, OSError) as exc:
            self._close_port(str(exc))
            return
        for event in self._reader.feed(data):
            kind = event[0]
            if kind == "rcv":
                self.core.receive(self.port, event[2])
                self.committer.schedule()
            elif kind in ("ok", "err") and self._waiting is not None:
                command, _, purpose = self._waiting
                self._waiting = None
                if kind == "err":
                    log.warning("LoRa modem answered +ERR=%d to %r", event[1], command[:16])
                    self.core.stats["lora_command_errors"] += 1
                if purpose == "downlink" and kind == "ok":
                    self._duty.spend(ticks_ms(), self._downlink_air)
                    self.core.stats["lora_downlinks"] += 1
                self._next_command()
            elif kind == "error":
                self.core.refuse(self.port, "at", event[1])

    def _next_command(self) -> None:
        if self._waiting is not None or self._serial is None:
            return
        if not self._commands:
            self._queue_downlink()
            if not self._commands:
                return
        command, data, purpose = self._commands.popleft()
        try:
            self._serial.write(command + data + b"\r\n")
        except (serial.SerialException, OSError) as exc:
            self._close_port(str(exc))
            return
        self._waiting = (command, time.monotonic() + _COMMAND_S, purpose)

    def deliver(self, done: Flushed) -> None:
        """Counters this commit made durable wait for their device's next downlink."""
        now = time.monotonic()
        for port, key, counter in done.acked:
            if port == self.port:
                self._pending.setdefault(key, {}).setdefault(counter, now)
        self._answers.extend(frame for port, _, frame in done.answers if port == self.port)

    def _queue_downlink(self) -> None:
        """Queue the next downlink, if one is due and the duty cycle allows it: an answer
        waiting (a device is listening for it), else a multi-ACK that is due."""
        if not (self._pending or self._answers) or self._duty.ready_in_ms(ticks_ms()):
            return
        o = self.options
        if self._answers:
            self._send_downlink(self._answers.popleft())
            self.core.stats["lora_answers"] += 1
            return
        now = time.monotonic()
        delay = o.ack_delay_s / o.time_scale
        due = [(min(c.values()), k.kid, k) for k, c in self._pending.items()
               if len(c) >= o.ack_batch or now - min(c.values()) >= delay]
        if not due:
            return
        _, _, key = min(due)  # the longest waiting; kids are unique, so keys are never compared
        pending = self._pending[key]
        top = max(pending)
        counters = sorted(c for c in pending if top - c < MULTI_ACK_SPAN)
        for c in counters:
            del pending[c]
        if not pending:
            del self._pending[key]
        self.core.stats["lora_acked_counters"] += len(counters)
        self._send_downlink(seal_multi_ack(key, counters))

    def _send_downlink(self, frame: bytes) -> None:
        o = self.options
        self._downlink_air = airtime.time_on_air_us(len(frame), o.sf, o.bw, o.cr, o.preamble)
        self._commands.append((b"AT+BAND=%d" % (o.downlink_khz * 1000), b"", "band"))
        self._commands.append((b"AT+SEND=0,%d," % len(frame), frame, "downlink"))
        self._commands.append((b"AT+BAND=%d" % (o.uplink_khz * 1000), b"", "band"))

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._serial is not None:
            self._loop.remove_reader(self._serial.fileno())
            self._serial.close()
            self._serial = None
