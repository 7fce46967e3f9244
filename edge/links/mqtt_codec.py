# MQTT 3.1.1 client packets, sans-IO: the packets a device sends, encoded; the packets a
# broker sends, decoded by a strict streaming decoder. No sockets here (edge/links/mqtt.py
# is the shell). OASIS MQTT 3.1.1, sections 2 (fixed header) and 3 (packets).
#
# Decoder rules (the broker's bytes are untrusted until the frame inside is authenticated):
# - Fixed layout: the first byte names the packet type and its flags, which must be the
#   ones 3.1.1 fixes for that type (PUBLISH: QoS 0..2); the remaining length is at most
#   4 bytes and at most `max_packet`, checked before a byte of the body is stored.
# - Only the packets a client can receive are accepted: CONNACK, PUBLISH, PUBACK, SUBACK,
#   PINGRESP. Each body has its exact length (CONNACK 2, PUBACK 2, PINGRESP 0, SUBACK
#   2 + codes); a PUBLISH topic length must fit the body. Anything else raises DecodeError
#   and the connection is to be closed: the stream cannot be resynchronised.
# - One preallocated buffer of max_packet bytes holds the packet being received; events
#   carry copies, so the buffer is reused.
from ..compat import const
from ..errors import DecodeError, EncodeError

CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBSCRIBE = const(8)
SUBACK = const(9)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
SUBACK_FAILURE = const(0x80)
_MAX_REMAINING = const(268435455)  # 4 bytes of varint

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


def _varint(n):
    if n < 0 or n > _MAX_REMAINING:
        raise EncodeError("MQTT remaining length %d out of range" % n)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _str(value):
    data = value.encode() if isinstance(value, str) else bytes(value)
    if len(data) > 0xFFFF:
        raise EncodeError("MQTT string of %d bytes is too long" % len(data))
    return bytes((len(data) >> 8, len(data) & 0xFF)) + data


def connect(client_id, keepalive_s, clean_session=False, will=None, username=None, password=None):
    """CONNECT; will = (topic, message, qos, retain) or None."""
    if not 0 <= keepalive_s <= 0xFFFF:
        raise EncodeError("MQTT keep-alive must be 0..65535 s, got %r" % (keepalive_s,))
    flags = 0x02 if clean_session else 0
    payload = _str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        if qos not in (0, 1):
            raise EncodeError("will QoS must be 0 or 1")
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        if username is None:
            raise EncodeError("MQTT 3.1.1 needs a user name with a password")
        flags |= 0x40
        payload += _str(password)
    body = b"\x00\x04MQTT\x04" + bytes((flags, keepalive_s >> 8, keepalive_s & 0xFF)) + payload
    return b"\x10" + _varint(len(body)) + body


def subscribe(packet_id, topic, qos=1):
    body = bytes((packet_id >> 8, packet_id & 0xFF)) + _str(topic) + bytes((qos,))
    return b"\x82" + _varint(len(body)) + body


def puback(packet_id):
    return bytes((0x40, 2, packet_id >> 8, packet_id & 0xFF))


def publish_size(topic, payload_len, qos=1):
    n = 2 + len(topic) + (2 if qos else 0) + payload_len
    return 1 + len(_varint(n)) + n


def publish_into(buf, topic, payload, packet_id, qos=1, retain=False):
    """Write a PUBLISH of payload on topic (bytes) into buf (a preallocated bytearray of
    at least publish_size() bytes); return its length n: the packet is buf[:n]."""
    if not 1 <= packet_id <= 0xFFFF and qos:
        raise EncodeError("MQTT packet id must be 1..65535, got %r" % (packet_id,))
    n = publish_size(topic, len(payload), qos)
    if len(buf) < n:
        raise EncodeError("buffer of %d bytes too small for a %d-byte PUBLISH" % (len(buf), n))
    rl = 2 + len(topic) + (2 if qos else 0) + len(payload)
    head = bytes((0x30 | (qos << 1) | (1 if retain else 0),)) + _varint(rl) + _str(topic)
    if qos:
        head += bytes((packet_id >> 8, packet_id & 0xFF))
    mv = memoryview(buf)
    mv[: len(head)] = head
    mv[len(head) : n] = payload
    return n


class Decoder:
    """Broker bytes in, events out: ("connack", session_present, code), ("publish", topic,
    payload, qos, packet_id), ("puback", packet_id), ("suback", packet_id, codes),
    ("pingresp",). DecodeError on anything 3.1.1 does not allow a broker to send."""

    def __init__(self, max_packet=1024):
        self.max_packet = max_packet
        self._buf = bytearray(max_packet)
        self._mv = memoryview(self._buf)
        self._reset()

    def _reset(self):
        self._type = -1  # first byte of the packet being read, -1 before it
        self._len = 0  # remaining length so far
        self._len_bytes = 0
        self._have_len = False
        self._n = 0  # body bytes stored

    def feed(self, data):
        events = []
        i = 0
        size = len(data)
        while i < size:
            if self._type < 0:
                self._type = data[i]
                self._check_first(self._type)
                i += 1
                continue
            if not self._have_len:
                b = data[i]
                i += 1
                self._len |= (b & 0x7F) << (7 * self._len_bytes)
                self._len_bytes += 1
                if b & 0x80:
                    if self._len_bytes == 4:
                        raise DecodeError("mqtt: remaining length longer than 4 bytes")
                    continue
                if self._len > self.max_packet:
                    raise DecodeError("mqtt: packet of %d bytes, at most %d accepted" % (self._len, self.max_packet))
                self._have_len = True
            take = self._len - self._n
            if take > size - i:
                take = size - i
            self._mv[self._n : self._n + take] = data[i : i + take]
            self._n += take
            i += take
            if self._n == self._len:
                events.append(self._packet())
                self._reset()
        return events

    def _check_first(self, first):
        kind, flags = first >> 4, first & 0x0F
        if kind == PUBLISH:
            if (flags >> 1) & 3 == 3:
                raise DecodeError("mqtt: PUBLISH with QoS 3")
        elif kind in (CONNACK, PUBACK, SUBACK, PINGRESP):
            if flags:
                raise DecodeError("mqtt: packet type %d with flags %d (must be 0)" % (kind, flags))
        else:
            raise DecodeError("mqtt: packet type %d is not one a broker sends a client" % kind)

    def _packet(self):
        kind, flags = self._type >> 4, self._type & 0x0F
        body = self._mv[: self._len]
        n = self._len
        if kind == CONNACK:
            if n != 2 or body[0] & 0xFE:
                raise DecodeError("mqtt: CONNACK must be 2 bytes with flags 0 or 1")
            return ("connack", body[0] & 1, body[1])
        if kind == PUBACK:
            if n != 2:
                raise DecodeError("mqtt: PUBACK must be 2 bytes, got %d" % n)
            return ("puback", (body[0] << 8) | body[1])
        if kind == PINGRESP:
            if n:
                raise DecodeError("mqtt: PINGRESP must be empty")
            return ("pingresp",)
        if kind == SUBACK:
            if n < 3:
                raise DecodeError("mqtt: SUBACK must hold a packet id and a return code")
            codes = bytes(body[2:n])
            for c in codes:
                if c not in (0, 1, 2, SUBACK_FAILURE):
                    raise DecodeError("mqtt: SUBACK return code 0x%02x" % c)
            return ("suback", (body[0] << 8) | body[1], codes)
        qos = (flags >> 1) & 3  # PUBLISH
        if n < 2:
            raise DecodeError("mqtt: PUBLISH too short for its topic length")
        tlen = (body[0] << 8) | body[1]
        start = 2 + tlen + (2 if qos else 0)
        if start > n:
            raise DecodeError("mqtt: PUBLISH topic of %d bytes does not fit its %d-byte body" % (tlen, n))
        pid = (body[2 + tlen] << 8) | body[3 + tlen] if qos else 0
        if qos and pid == 0:
            raise DecodeError("mqtt: PUBLISH with QoS %d and packet id 0" % qos)
        return ("publish", bytes(body[2 : 2 + tlen]), bytes(body[start:n]), qos, pid)
