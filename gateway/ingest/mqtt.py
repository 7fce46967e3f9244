"""MQTT ingest: devices' frames from the clinic broker into the core, ACKs back on each
device's downlink topic. paho-mqtt runs the connection on its own thread; everything it
receives is handed to the event loop, where the core lives.

Topics (docs/PROTOCOL.md, "MQTT topics"): PREFIX/DEVICE/up carries a device's frames,
PREFIX/DEVICE/down its ACKs. The topic names nobody's key: an ACK goes to the downlink of
the device whose key authenticated the frame, whatever topic the frame came on.

Rules:
- A persistent session (clean session 0, a fixed client id) and a QoS 1 subscription:
  frames published while the gateway is down wait at the broker and are delivered when
  it returns. Each message is acknowledged to the broker (PUBACK, paho's manual ack) only
  after the commit that took it, so a gateway killed before its commit gets the message
  again from the broker. (If the commit itself failed, the message is acknowledged all
  the same: holding it would stall the session, and the device re-sends every frame the
  gateway did not acknowledge.)
- Refusals are counted under the one port name "mqtt", never per topic: a topic is
  chosen by whoever publishes, and the refusal log is bounded per port.
- The connection is paho's: it reconnects with a back-off (1 s to 30 s) on its own.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from ..core import Flushed, GatewayCore
from ..errors import GatewayError
from .commit import Committer

log = logging.getLogger("qis.gateway.mqtt")
PORT = "mqtt"
PREFIX = "qis/v1"
MAX_FRAME = 600  # larger than any profile: a longer message is refused by its size alone


class MqttOptions:
    """Where the broker is and how to log in: mqtt[s]://USER@HOST:PORT, a password file
    (0600; never the URL, which shows in the process list) and the clinic CA for TLS."""

    def __init__(self, url: str, password_file: Path | None = None, ca: Path | None = None,
                 client_id: str = "qis-gateway", prefix: str = PREFIX) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise GatewayError(f"--mqtt wants mqtt://USER@HOST:PORT or mqtts://..., not {url!r}")
        if parts.password:
            raise GatewayError("put the MQTT password in a file (--mqtt-password-file), not in the URL")
        self.tls = parts.scheme == "mqtts"
        self.host = parts.hostname
        self.port = parts.port or (8883 if self.tls else 1883)
        self.username = parts.username or "qis-gateway"
        self.password = None
        if password_file is not None:
            mode = password_file.stat().st_mode & 0o777
            if mode & 0o077:
                raise GatewayError(f"{password_file} is readable by others (mode {mode:o}); chmod 600 it")
            self.password = password_file.read_text().strip()
        if self.tls and ca is None:
            raise GatewayError("mqtts:// needs the clinic CA certificate (--mqtt-ca FILE)")
        self.ca = ca
        self.client_id = client_id
        self.prefix = prefix


class MqttIngest:
    """One broker connection, feeding the core under port "mqtt"."""

    def __init__(self, core: GatewayCore, options: MqttOptions, committer: Committer) -> None:
        self.core = core
        self.options = options
        self.committer = committer
        committer.links.append(self)
        self._unacked: list[tuple[int, int]] = []  # (mid, qos) of messages in the open transaction
        self._loop: asyncio.AbstractEventLoop | None = None
        o = options
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=o.client_id, clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(o.username, o.password)
        if o.tls:
            self.client.tls_set(ca_certs=str(o.ca))
        self.client.manual_ack_set(True)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.options.host, self.options.port, keepalive=30)
        self.client.loop_start()

    # -- paho's thread ------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            log.error("broker refused the gateway: %s", reason)
            return
        log.info("connected to %s:%d (session present: %s)", self.options.host, self.options.port,
                 flags.session_present)
        client.subscribe(f"{self.options.prefix}/+/up", qos=1)
        self._loop.call_soon_threadsafe(self.core.stats.update, {"mqtt_connects": 1})

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        log.warning("disconnected from the broker (%s); paho reconnects", reason)

    def _on_message(self, client, userdata, message) -> None:
        self._loop.call_soon_threadsafe(self._receive, message.topic, bytes(message.payload), message.mid,
                                        message.qos)

    # -- the event loop -----------------------------------------------------------------

    def _receive(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        parts = topic.split("/")
        if len(parts) != 4 or "/".join(parts[:2]) != self.options.prefix or parts[3] != "up":
            self.core.refuse(PORT, "topic", "not PREFIX/DEVICE/up")
        elif len(payload) > MAX_FRAME:
            self.core.refuse(PORT, "size", "message longer than any frame")
        else:
            self.core.receive(PORT, payload)
        if qos:
            self._unacked.append((mid, qos))
        self.committer.schedule()

    def deliver(self, done: Flushed) -> None:
        """Publish the ACKs and answers of this commit, then release the messages it made durable."""
        for (port, key, _), (_, ack) in zip(done.acked, done.acks):
            if port == PORT:
                self.client.publish(f"{self.options.prefix}/{key.device}/down", ack, qos=1)
        for port, device, answer in done.answers:
            if port == PORT:
                self.client.publish(f"{self.options.prefix}/{device}/down", answer, qos=1)
        for mid, qos in self._unacked:
            self.client.ack(mid, qos)
        self._unacked.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
