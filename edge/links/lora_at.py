# LoRa link over a UART AT-command module of the RYLR998 class: AT+SEND=<addr>,<len>,<data>
# out, +RCV=<addr>,<len>,<data>,<rssi>,<snr> in. Frames are sent as they are: <data> is
# the frame's bytes, read and written by their length, never by a delimiter (a frame may
# hold commas, CR and LF).
#
# AtParser rules (the module's output is untrusted until a frame inside authenticates):
# - Responses are lines ending in CR LF: +OK, +ERR=<1-3 digits>, +READY, +<WORD>=<value>
#   (the answer to a query; printable ASCII only) and +RCV=... Any other line, or one longer than 64 bytes
#   before its data, is reported as ("error", reason) and skipped up to its LF.
# - +RCV: address and length are decimal (at most 5 and 3 digits); the length must be at
#   most max_payload; exactly that many bytes of data follow, then ,<rssi>,<snr> CR LF
#   (optional minus signs, at most 4 digits each). A tail that does not match drops the
#   packet as an error. Nothing is allocated from a length before it is checked.
#
# AtLoraLink rules: as edge/links/lora.py (uplink on uplink_khz under its duty cycle,
# receive on downlink_khz between uplinks, duty cycle in send_delay_ms()). The module does
# not report time on air: the link computes it (edge/airtime.py) and does not reconfigure
# the module before the packet is surely off the air. Commands wait for +OK; +ERR or no
# answer within command_ms raises AtError, except in send(), where the frame is simply
# left to the node (it stays in the outbox and is sent again).
from ..airtime import DutyCycle, time_on_air_us
from ..compat import sleep_ms, ticks_add, ticks_diff, ticks_ms
from ..errors import QisError
from .serialio import ByteReader

_HEAD_MAX = 64
_TAIL_MAX = 16
_BW_CODE = {125: 7, 250: 8, 500: 9}


class AtError(QisError):
    """The module answered +ERR, or nothing, to a command."""


def _uint(text, digits):
    if not text or len(text) > digits:
        return -1
    n = 0
    for c in text:
        if c < 48 or c > 57:
            return -1
        n = n * 10 + c - 48
    return n


def _int(text, digits):
    if text[:1] == b"-":
        v = _uint(text[1:], digits)
        return None if v < 0 else -v
    v = _uint(text, digits)
    return None if v < 0 else v


class AtParser:
    """Module output in, events out: ("ok",), ("err", code), ("ready",), ("value", word,
    text), ("rcv", address, payload, rssi, snr), ("error", reason)."""

    def __init__(self, max_payload=255):
        self.max_payload = max_payload
        self._head = bytearray()
        self._data = bytearray()
        self._need = -1  # data bytes still to read, -1 outside a +RCV's data
        self._rcv = None  # (address, length) of the +RCV being read
        self._tail = None  # bytes after the data, None before the data ends
        self._skip = False

    def feed(self, data):
        events = []
        for b in bytes(data):
            if self._skip:
                if b == 10:
                    self._skip = False
            elif self._need > 0:
                self._data.append(b)
                self._need -= 1
                if self._need == 0:
                    self._tail = bytearray()
            elif self._tail is not None:
                self._tail.append(b)
                if b == 10:
                    events.append(self._finish_rcv())
                elif len(self._tail) > _TAIL_MAX:
                    events.append(self._fail("+RCV tail too long"))
            elif b == 10:
                events.append(self._line())
            else:
                self._head.append(b)
                if len(self._head) > _HEAD_MAX:
                    events.append(self._fail("line longer than %d bytes" % _HEAD_MAX))
                elif b == 44 and self._head.startswith(b"+RCV=") and self._head.count(b",") == 2:
                    self._start_rcv(events)
        return [e for e in events if e is not None]

    def _fail(self, reason, skip=True):
        self._head = bytearray()
        self._data = bytearray()
        self._need = -1
        self._tail = None
        self._skip = skip
        return ("error", reason)

    def _start_rcv(self, events):
        parts = bytes(self._head[5:-1]).split(b",")
        addr, length = _uint(parts[0], 5), _uint(parts[1], 3)
        if addr < 0 or addr > 65535 or length < 0:
            events.append(self._fail("+RCV address or length is not a number"))
        elif length > self.max_payload:
            events.append(self._fail("+RCV of %d bytes, at most %d" % (length, self.max_payload)))
        else:
            self._rcv = (addr, length)
            self._need = length
            if length == 0:
                self._tail = bytearray()

    def _finish_rcv(self):
        rcv, tail = self._rcv, self._tail
        if rcv is None or tail is None:
            return self._fail("+RCV data without its header", skip=False)
        tail = bytes(tail)
        parts = tail[1:-2].split(b",") if tail[:1] == b"," and tail[-2:] == b"\r\n" else ()
        rssi = _int(parts[0], 4) if len(parts) == 2 else None
        snr = _int(parts[1], 4) if len(parts) == 2 else None
        if rssi is None or snr is None:
            return self._fail("+RCV does not end in ,<rssi>,<snr> CR LF", skip=False)
        event = ("rcv", rcv[0], bytes(self._data), rssi, snr)
        self._fail("")
        self._skip = False
        return event

    def _line(self):
        line = bytes(self._head)
        self._head = bytearray()
        if not line.endswith(b"\r"):
            return ("error", "line does not end in CR LF")
        line = line[:-1]
        if not line:
            return None
        if line == b"+OK":
            return ("ok",)
        if line == b"+READY":
            return ("ready",)
        if line.startswith(b"+ERR="):
            code = _uint(line[5:], 3)
            return ("err", code) if code >= 0 else ("error", "+ERR code is not a number")
        eq = line.find(b"=")
        if line[:1] == b"+" and eq > 1 and line[1:eq].isalpha() and line[1:eq] != b"RCV" and _printable(line):
            return ("value", line[1:eq].decode(), line[eq + 1:].decode())
        return ("error", "unknown response of %d bytes" % len(line))


def _printable(text):
    for c in text:
        if c < 32 or c > 126:
            return False
    return True


class AtLoraLink:
    def __init__(self, rx, tx=None, sf=7, bw_khz=125, coding_rate=5, preamble=8, address=1, network=18,
                 uplink_khz=868100, downlink_khz=869525, time_scale=1, command_ms=5000):
        self._reader = ByteReader(rx, 128)
        self._tx = tx if tx is not None else rx
        self._parser = AtParser()
        self._sf, self._bw, self._cr, self._preamble = sf, bw_khz, coding_rate, preamble
        self._up, self._down = uplink_khz, downlink_khz
        self._duty = DutyCycle(uplink_khz, time_scale)
        self._scale = time_scale
        self._command_ms = command_ms
        self._frames = []  # packets that arrived while a command waited for its answer
        self.sent = 0
        self.refused = 0
        self.garbage = 0
        self.command(b"AT")
        self.command(b"AT+ADDRESS=%d" % address)
        self.command(b"AT+NETWORKID=%d" % network)
        self.command(b"AT+PARAMETER=%d,%d,%d,%d" % (sf, _BW_CODE[bw_khz], coding_rate - 4, preamble))
        self.command(b"AT+BAND=%d" % (downlink_khz * 1000))

    @property
    def closed(self):
        return self._reader.closed

    def _write(self, data):
        self._tx.write(data)
        if hasattr(self._tx, "flush"):
            self._tx.flush()

    def command(self, text, data=None):
        """Send one command (data: the bytes of an AT+SEND) and wait for +OK."""
        self._write(text + (data or b"") + b"\r\n")
        deadline = ticks_add(ticks_ms(), self._command_ms)
        while True:
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                raise AtError("no answer to %s within %d ms" % (text[:16].decode(), self._command_ms))
            for event in self._events(left):
                if event[0] == "ok":
                    return
                if event[0] == "err":
                    raise AtError("%s answered +ERR=%d" % (text[:16].decode(), event[1]))

    def _events(self, timeout_ms):
        data = self._reader.read(timeout_ms)
        if not data:
            return ()
        out = []
        for event in self._parser.feed(data):
            if event[0] == "rcv":
                self._frames.append(event[2])
            elif event[0] == "error":
                self.garbage += 1
            else:
                out.append(event)
        return out

    def send_delay_ms(self):
        return self._duty.ready_in_ms(ticks_ms())

    def send(self, frame):
        air_us = time_on_air_us(len(frame), self._sf, self._bw, self._cr, self._preamble)
        try:
            self.command(b"AT+BAND=%d" % (self._up * 1000))
            start = ticks_ms()
            self.command(b"AT+SEND=0,%d," % len(frame), frame)
            # Some modules answer +OK before the packet is on the air: let it leave first.
            off_air = ticks_add(start, -(-air_us // int(1000 * self._scale)))
            left = ticks_diff(off_air, ticks_ms())
            if left > 0:
                sleep_ms(left)
            self.sent += 1
        except AtError:
            self.refused += 1
        self._duty.spend(ticks_ms(), air_us)
        self.command(b"AT+BAND=%d" % (self._down * 1000))

    def receive(self, timeout_ms):
        """The packets received within timeout_ms (a list of bytes)."""
        if not self._frames:
            self._events(timeout_ms)
        frames, self._frames = self._frames, []
        return frames
