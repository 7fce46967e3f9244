# COBS + CRC32 record framing for byte streams (UART, LoRa modems). Sans-IO: bytes in,
# events out; no I/O here.
#
# Wire record: 0x00, COBS(payload || CRC32(payload) as 4 bytes little-endian), 0x00.
# The leading 0x00 ends whatever line noise came before it, so one lost or garbled
# delimiter damages at most the records that touch it.
#
# Decoder state rules:
# - It holds one preallocated receive buffer of `capacity` bytes (the longest COBS record
#   a `max_payload` payload can produce) and a fill count; a delimiter is never stored.
# - 0x00 ends a record: an empty record is ignored (normal between two delimiters);
#   any other record is COBS-decoded in place, checked, and yields exactly one event,
#   ("frame", payload) or ("error", reason); the fill count then returns to 0.
# - A record that grows past `capacity` before its delimiter yields ("error", "too long")
#   at once; bytes are then discarded until the next 0x00, which resynchronises.
# - A record is never split or merged by the decoder, so chunk boundaries in feed()
#   do not matter: byte by byte or all at once give the same events.
import binascii
import struct

from .compat import const, micropython, ptr8
from .errors import EncodeError, QisError



MAX_PAYLOAD = const(1024)  # default largest payload, in bytes
_CRC_LEN = const(4)
_BLOCK = const(254)  # data bytes in a full COBS block (code 0xFF)
_ZERO = b"\x00"


def cobs_capacity(n):
    """Longest COBS encoding of n bytes (n >= 1): one code byte per started 254-byte block."""
    return n + 1 + (n - 1) // _BLOCK


def max_wire_size(payload_len):
    """Bytes a record with a payload of payload_len bytes needs at most, delimiters included."""
    return cobs_capacity(payload_len + _CRC_LEN) + 2


# --- COBS hot loops: written once as viper; on CPython compat's stand-ins run the same source


@micropython.viper
def _stuff(buf: ptr8, d: int, m: int) -> int:
    """COBS-encode buf[d:d+m] in place into buf[1:]; return the end index of the output.

    Safe in place because the input starts d >= 2 + m // 254 bytes in: each code byte
    moves the output at most one byte closer to the unread input.
    """
    r = d
    end = d + m
    c = 1  # index of the open block's code byte
    w = 2
    code = 1
    while r < end:
        b = buf[r]
        r += 1
        if b == 0:
            buf[c] = code
            c = w
            w += 1
            code = 1
        else:
            buf[w] = b
            w += 1
            code += 1
            if code == 0xFF:
                buf[c] = code
                code = 1
                if r < end:
                    c = w
                    w += 1
                else:
                    c = -1  # data ended on a full block: no final code byte
    if c >= 0:
        buf[c] = code
    return w


@micropython.viper
def _unstuff(buf: ptr8, n: int) -> int:
    """COBS-decode buf[:n] (no zero bytes in it) in place; return the decoded length,
    or -1 if a block runs past the end of the record."""
    r = 0
    w = 0
    while r < n:
        code = int(buf[r])
        end = r + code
        if end > n:
            return -1
        r += 1
        while r < end:
            buf[w] = buf[r]
            w += 1
            r += 1
        if code != 0xFF and r < n:
            buf[w] = 0
            w += 1
    return w


def _payload_len(payload, max_payload):
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise EncodeError("payload must be bytes, not %s" % type(payload).__name__)
    m = len(payload)
    if m > max_payload:
        raise EncodeError("payload of %d bytes exceeds max_payload %d" % (m, max_payload))
    return m


def encode_into(payload, buf, max_payload=MAX_PAYLOAD):
    """Write the wire record of payload into buf (a preallocated bytearray of at least
    max_wire_size(len(payload)) bytes); return the record's length n: it is buf[:n]."""
    m = _payload_len(payload, max_payload)
    if not isinstance(buf, bytearray):
        raise EncodeError("buf must be a bytearray, not %s" % type(buf).__name__)
    need = max_wire_size(m)
    if len(buf) < need:
        raise EncodeError("buf of %d bytes too small: a %d-byte payload needs %d" % (len(buf), m, need))
    d = 2 + (m + _CRC_LEN) // _BLOCK  # input offset that keeps the in-place encoding safe
    buf[d : d + m] = payload
    struct.pack_into("<I", buf, d + m, binascii.crc32(payload))
    w = _stuff(buf, d, m + _CRC_LEN)
    buf[0] = 0
    buf[w] = 0
    return w + 1


def encode(payload, max_payload=MAX_PAYLOAD):
    """The wire record of payload: 0x00, COBS(payload || CRC32 LE), 0x00."""
    buf = bytearray(max_wire_size(_payload_len(payload, max_payload)))
    n = encode_into(payload, buf, max_payload)
    return bytes(memoryview(buf)[:n])


class Decoder:
    """Turns a byte stream into ("frame", payload) and ("error", reason) events."""

    def __init__(self, max_payload=MAX_PAYLOAD):
        if not isinstance(max_payload, int) or max_payload < 0:
            raise QisError("max_payload must be a non-negative int, not %r" % (max_payload,))
        self.max_payload = max_payload
        self.capacity = cobs_capacity(max_payload + _CRC_LEN)
        self._buf = bytearray(self.capacity)
        self._mv = memoryview(self._buf)
        self._n = 0  # bytes of the current record held in _buf
        self._skip = False  # discarding an over-long record until the next 0x00
        self.frames = 0
        self.errors = 0
        self.bytes_in = 0

    def feed(self, data):
        """Consume data (bytes-like); return the list of events it completed, in order."""
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        events = []
        size = len(data)
        self.bytes_in += size
        src = memoryview(data)
        i = 0
        while i < size:
            j = data.find(_ZERO, i)
            stop = size if j < 0 else j
            if not self._skip and stop > i:
                n = self._n
                k = stop - i
                if n + k > self.capacity:
                    self._error(events, "too long")
                    self._skip = True
                else:
                    self._mv[n : n + k] = src[i:stop]
                    self._n = n + k
            if j < 0:
                break
            if self._skip:
                self._skip = False
            elif self._n:
                self._record(events)
            self._n = 0
            i = j + 1
        return events

    def _error(self, events, reason):
        self.errors += 1
        events.append(("error", reason))

    def _record(self, events):
        n = _unstuff(self._buf, self._n)
        if n < 0:
            self._error(events, "cobs: block runs past the end of the record")
        elif n < _CRC_LEN:
            self._error(events, "too short")
        elif n - _CRC_LEN > self.max_payload:
            self._error(events, "too long")
        else:
            m = n - _CRC_LEN
            body = self._mv[:m]
            if binascii.crc32(body) != struct.unpack_from("<I", self._buf, m)[0]:
                self._error(events, "crc mismatch")
            else:
                self.frames += 1
                events.append(("frame", bytes(body)))
