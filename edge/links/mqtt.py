# MQTT link: whole frames as QoS 1 PUBLISH packets on the device's own topics, over a
# socket (optionally TLS with the clinic's CA) to the clinic's broker. MicroPython's
# socket, select and ssl; the packets are edge/links/mqtt_codec.py's.
#
# Topics (docs/PROTOCOL.md, "MQTT topics"): the device publishes its frames on
# PREFIX/ID/up, reads ACKs and answers on PREFIX/ID/down, and its state ("online",
# and "offline" as its will) on PREFIX/ID/state. ID is the device id and its user name.
#
# Rules
# - A PUBACK only says the broker has the frame: a frame leaves the outbox only on the
#   gateway's ACK (edge/node.py), so send() never waits for a PUBACK and a frame sent
#   while the connection drops is simply sent again by the node.
# - The session is persistent (clean session 0) and the downlink subscription QoS 1, so
#   ACKs published while the device was away are delivered when it returns.
# - Connection loss (an error, the broker closing, no PINGRESP within the keep-alive) closes
#   the socket and schedules a reconnect after a back-off: 1 s doubling to 60 s, with
#   jitter, reset by a connection that completes. send_delay_ms() tells the device loop
#   how long until then, so nothing is handed to a link that cannot send.
# - What the broker sends is decoded strictly (mqtt_codec.Decoder); a protocol error closes
#   the connection. Only PUBLISHes on the downlink topic are returned as frames, and the
#   frames themselves are authenticated by the node before anything reads them.
import select
import socket

from ..compat import const, ticks_add, ticks_diff, ticks_ms, urandom
from ..errors import DecodeError, QisError
from . import mqtt_codec

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_HANDSHAKE_MS = const(5000)  # CONNACK and SUBACK must come within this
_POLL_ERR = select.POLLHUP | select.POLLERR


class MqttError(QisError):
    """The broker refused the connection or the subscription (credentials, ACL)."""


class MqttLink:
    def __init__(self, host, port, device, password=None, ca_der=None, prefix="qis/v1", keepalive_s=30,
                 max_send=512, max_receive=1024, report=None):
        """ca_der: the clinic CA certificate (DER) for TLS, or None for a plain socket.
        report(event, **fields), if given, is told of connections and their loss."""
        self.host, self.port = host, port
        self.device = device
        self._password = password
        self._ca = ca_der
        self.up = (prefix + "/" + device + "/up").encode()
        self.down = (prefix + "/" + device + "/down").encode()
        self.state = (prefix + "/" + device + "/state").encode()
        self.keepalive_s = keepalive_s
        self._report = report
        self._out = bytearray(mqtt_codec.publish_size(self.up, max_send))  # reused for every frame
        self._buf = bytearray(256)
        self._view = memoryview(self._buf)
        self._decoder = None
        self._max_receive = max_receive
        self._sock = None
        self._poll = None
        self._pid = 0
        self._backoff = _BACKOFF_MIN_MS
        self._retry_at = ticks_ms()
        self._sent_at = 0
        self._ping_at = None  # when the unanswered PINGREQ went out
        self.connected = False
        self.closed = False  # the link itself never gives up: it reconnects
        self.connects = 0
        self.published = 0
        self.pubacks = 0

    # -- connection --------------------------------------------------------------------

    def _connect(self):
        """Open the socket, CONNECT, SUBSCRIBE; True once the session is up."""
        try:
            addr = socket.getaddrinfo(self.host, self.port)[0][-1]
            sock = socket.socket()
            sock.settimeout(_HANDSHAKE_MS / 1000)
            sock.connect(addr)
            if self._ca is not None:
                import ssl

                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # MicroPython's has it; the stubs do not
                ctx.load_verify_locations(cadata=self._ca)
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
            sock.setblocking(False)  # from here on: poll, then read what is there
            self._sock = sock
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
            self._decoder = mqtt_codec.Decoder(self._max_receive)
            will = (self.state, b"offline", 1, True)
            self._write(mqtt_codec.connect(self.device, self.keepalive_s, False, will, self.device, self._password))
            kind, present, code = self._await("connack")
            if code:
                raise MqttError("broker refused the connection: %s" % mqtt_codec.CONNACK_REASONS.get(code, code))
            pid = self._next_pid()
            self._write(mqtt_codec.subscribe(pid, self.down, 1))
            event = self._await("suback")
            if event[1] != pid or event[2][0] == mqtt_codec.SUBACK_FAILURE:
                raise MqttError("broker refused the subscription to %s" % self.down.decode())
            self._publish(self.state, b"online", retain=True)
        except (OSError, ValueError, QisError) as exc:  # MicroPython's ssl: ValueError for a bad certificate
            self._drop("connect failed: %s" % (exc,))
            return False
        self.connected = True
        self.connects += 1
        self._backoff = _BACKOFF_MIN_MS
        self._ping_at = None
        self._sent_at = ticks_ms()
        if self._report:
            self._report("link", state="connected", session_present=present)
        return True

    def _await(self, kind):
        """The next event of kind during the handshake (PUBLISHes queued meanwhile are
        dropped: the gateway re-sends what the node still needs)."""
        deadline = ticks_add(ticks_ms(), _HANDSHAKE_MS)
        while True:
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                raise OSError("no %s within %d ms" % (kind.upper(), _HANDSHAKE_MS))
            for event in self._read(left):
                if event[0] == kind:
                    return event
                if event[0] == "publish" and event[3]:
                    self._write(mqtt_codec.puback(event[4]))

    def _drop(self, why):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        was = self.connected
        self._sock = None
        self.connected = False
        jitter = (urandom(1)[0] * self._backoff) >> 9  # up to half the back-off
        self._retry_at = ticks_add(ticks_ms(), self._backoff + jitter)
        self._backoff = self._backoff * 2 if self._backoff < _BACKOFF_MAX_MS // 2 else _BACKOFF_MAX_MS
        if self._report:
            self._report("link", state="disconnected", reason=why, was_connected=was)

    def _next_pid(self):
        self._pid = self._pid % 0xFFFF + 1
        return self._pid

    def _write(self, data):
        sock = self._sock
        if sock is None:
            raise OSError("not connected")
        mv = memoryview(data)
        sent = 0
        while sent < len(mv):
            n = sock.write(mv[sent:])
            if n is None:  # the socket is full: wait until it takes more
                writable = select.poll()
                writable.register(sock, select.POLLOUT)
                if not writable.poll(_HANDSHAKE_MS):
                    raise OSError("socket write timed out")
                continue
            sent += n
        self._sent_at = ticks_ms()

    def _read(self, timeout_ms):
        """Events from what arrives within timeout_ms (an empty list on a timeout)."""
        sock, poller, decoder = self._sock, self._poll, self._decoder
        if sock is None or poller is None or decoder is None:
            raise OSError("not connected")
        events = poller.poll(timeout_ms)
        if not events:
            return []
        if events[0][1] & _POLL_ERR and not events[0][1] & select.POLLIN:
            raise OSError("connection closed")
        n = sock.readinto(self._buf)
        if n is None:
            return []  # TLS record not complete yet
        if n == 0:
            raise OSError("connection closed by the broker")
        return decoder.feed(self._view[:n])

    def _publish(self, topic, payload, retain=False):
        n = mqtt_codec.publish_into(self._out, topic, payload, self._next_pid(), 1, retain)
        self._write(memoryview(self._out)[:n])

    # -- the link interface ------------------------------------------------------------

    def send_delay_ms(self):
        """0 while connected; otherwise the time until the next connection attempt (>= 1)."""
        if self.connected:
            return 0
        wait = ticks_diff(self._retry_at, ticks_ms())
        return wait if wait > 0 else 1

    def send(self, frame):
        """Publish one frame on the uplink topic (QoS 1). Nothing happens while
        disconnected: the node sends it again."""
        if not self.connected:
            return
        try:
            self._publish(self.up, frame)
            self.published += 1
        except OSError as exc:
            self._drop("publish failed: %s" % (exc,))

    def receive(self, timeout_ms):
        """The frames published on the downlink topic within timeout_ms (a list)."""
        if not self.connected:
            wait = ticks_diff(self._retry_at, ticks_ms())
            if wait > 0:
                if wait > timeout_ms:
                    self._sleep(timeout_ms)
                    return []
                self._sleep(wait)
            if not self._connect():
                return []
        now = ticks_ms()
        ping_due = ticks_diff(ticks_add(self._sent_at, self.keepalive_s * 500), now)
        if ping_due <= 0 and self._ping_at is None:
            self._ping_at = now
            try:
                self._write(mqtt_codec.PINGREQ_PACKET)
            except OSError as exc:
                self._drop("ping failed: %s" % (exc,))
                return []
            ping_due = self.keepalive_s * 500
        if self._ping_at is not None and ticks_diff(now, self._ping_at) > self.keepalive_s * 1000:
            self._drop("no PINGRESP within the keep-alive")
            return []
        frames = []
        try:
            for event in self._read(min(timeout_ms, max(ping_due, 0))):
                kind = event[0]
                if kind == "publish":
                    if event[3]:
                        self._write(mqtt_codec.puback(event[4]))
                    if event[1] == self.down:
                        frames.append(event[2])
                elif kind == "puback":
                    self.pubacks += 1
                elif kind == "pingresp":
                    self._ping_at = None
        except (OSError, DecodeError) as exc:
            self._drop("%s" % (exc,))
        return frames

    def _sleep(self, ms):
        select.poll().poll(ms)

    def close(self):
        if self._sock is not None:
            try:
                self._write(mqtt_codec.DISCONNECT_PACKET)
            except OSError:
                pass
        self._drop("closed")
