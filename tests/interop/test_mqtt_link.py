"""The MQTT link against a real mosquitto running the shipped clinic configuration (TLS
with a CA made for the test, passwords, the topic ACL): edge/links/mqtt.py under the real
MicroPython unix port, boards/rpi's paho-mqtt link under CPython, and the broker keeping
each device to its own topics."""
from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mp import mp_lines
from qis.boards.rpi.paho_link import PahoMqttLink
from qis.tools.sim.broker import GATEWAY_USER, Broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with Broker(tmp_path_factory.mktemp("broker"), ["dev-a", "dev-b"]) as b:
        yield b


@pytest.fixture
def gateway(broker):
    """A stand-in gateway: paho with the gateway's credentials; answers every uplink with b'ack:' + it."""
    got: list[tuple[str, bytes]] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-gw-{time.monotonic_ns()}", clean_session=True)
    c.username_pw_set(GATEWAY_USER, broker.passwords[GATEWAY_USER])
    c.tls_set(ca_certs=str(broker.ca))
    subscribed = threading.Event()

    def on_message(client, userdata, msg):
        got.append((msg.topic, bytes(msg.payload)))
        device = msg.topic.split("/")[2]
        if msg.payload == b"sentinel":  # the ACL test: something another device must never read
            client.publish("qis/v1/dev-b/down", b"secret-for-b", qos=1)
        client.publish(f"qis/v1/{device}/down", b"ack:" + msg.payload, qos=1)

    c.on_message = on_message
    c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe("qis/v1/+/up", qos=1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    assert subscribed.wait(10)
    yield got
    c.disconnect()
    c.loop_stop()


def ca_der(broker) -> bytes:
    return x509.load_pem_x509_certificate(broker.ca.read_bytes()).public_bytes(serialization.Encoding.DER)


MP_LINK = """
import json
from edge.links.mqtt import MqttLink
events = []
link = MqttLink("127.0.0.1", %(port)d, %(device)r, %(password)r, bytes.fromhex(%(ca)r),
                report=lambda ev, **kw: events.append(kw))
frames = []
link.receive(50)
for i in range(3):
    link.send(bytes([i]) * 51)
for _ in range(40):
    frames += link.receive(100)
    if len(frames) >= 3:
        break
link.close()
print(json.dumps({"frames": [bytes(f).hex() for f in frames], "events": events, "pubacks": link.pubacks}))
"""


def test_micropython_link_over_tls_publishes_and_receives_its_downlink(broker, gateway):
    out = mp_lines(MP_LINK % {"port": broker.port, "device": "dev-a", "password": broker.passwords["dev-a"],
                              "ca": ca_der(broker).hex()})
    result = json.loads(out[-1])
    assert [bytes.fromhex(f) for f in result["frames"]] == [b"ack:" + bytes([i]) * 51 for i in range(3)]
    assert result["events"][0]["state"] == "connected"
    assert result["pubacks"] >= 3  # the frames and the "online" state
    assert [t for t, _ in gateway] == ["qis/v1/dev-a/up"] * 3


def test_a_wrong_password_or_an_untrusted_broker_is_refused(broker, tmp_path):
    out = mp_lines(MP_LINK % {"port": broker.port, "device": "dev-a", "password": "not-it", "ca": ca_der(broker).hex()})
    result = json.loads(out[-1])
    assert result["frames"] == []
    assert "not authorized" in result["events"][0]["reason"]  # mosquitto's answer to a wrong password
    from qis.tools.sim.broker import make_ca

    other = make_ca(tmp_path)  # a CA that did not sign the broker's certificate
    out = mp_lines(MP_LINK % {"port": broker.port, "device": "dev-a", "password": broker.passwords["dev-a"],
                              "ca": x509.load_pem_x509_certificate(other.read_bytes())
                              .public_bytes(serialization.Encoding.DER).hex()})
    assert json.loads(out[-1])["events"][0]["state"] == "disconnected"


MP_TRESPASS = """
import json, select, socket, ssl
from edge.links import mqtt_codec as m
sock = socket.socket()
sock.connect(socket.getaddrinfo("127.0.0.1", %(port)d)[0][-1])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cadata=bytes.fromhex(%(ca)r))
sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
dec = m.Decoder()
def answer():
    p = select.poll(); p.register(sock, select.POLLIN)
    events = []
    while not events and p.poll(3000):
        events = dec.feed(sock.read(1) if False else sock.recv(256))
    return events
sock.write(m.connect("dev-a-trespass", 30, True, None, "dev-a", %(password)r))
out = {"connack": answer()[0][2]}
sock.write(m.subscribe(1, b"qis/v1/dev-b/down"))
out["suback_other"] = answer()[0][2][0]
sock.write(m.subscribe(2, b"qis/v1/dev-a/down"))
out["suback_own"] = answer()[0][2][0]
buf = bytearray(200)
n = m.publish_into(buf, b"qis/v1/dev-b/up", b"forged", 3)
sock.write(buf[:n])
n = m.publish_into(buf, b"qis/v1/dev-a/up", b"sentinel", 4)
sock.write(buf[:n])
seen = []
while b"ack:sentinel" not in [e[2] for e in seen if e[0] == "publish"]:
    events = answer()
    if not events:
        break
    for e in events:
        if e[0] == "publish":
            seen.append(e)
            if e[3]:
                sock.write(m.puback(e[4]))
out["received"] = [[e[1].decode(), e[2].decode()] for e in seen if e[0] == "publish"]
print(json.dumps(out))
"""


def test_acl_keeps_a_device_off_another_devices_topics(broker, gateway):
    out = json.loads(mp_lines(MP_TRESPASS % {"port": broker.port, "password": broker.passwords["dev-a"],
                                             "ca": ca_der(broker).hex()})[-1])
    assert out["connack"] == 0
    # mosquitto grants the subscription (MQTT 3.1.1 has no per-topic refusal worth trusting)
    # but delivers nothing the ACL does not let dev-a read:
    assert out["suback_own"] == 1
    assert out["received"] == [["qis/v1/dev-a/down", "ack:sentinel"]]
    deadline = time.monotonic() + 5
    while not gateway and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    # MQTT 3.1.1 acknowledges a denied PUBLISH all the same; the broker drops it
    assert gateway == [("qis/v1/dev-a/up", b"sentinel")]


def test_paho_device_link_on_cpython(broker, gateway):
    link = PahoMqttLink("127.0.0.1", broker.port, "dev-b", broker.passwords["dev-b"], broker.ca)
    try:
        deadline = time.monotonic() + 10
        while link.send_delay_ms() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the subscription is made in on_connect
        link.send(b"frame-1")
        frames = []
        while not frames and time.monotonic() < deadline:
            frames = link.receive(200)
        assert frames == [b"ack:frame-1"]
    finally:
        link.close()
