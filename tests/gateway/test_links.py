"""The gateway's link pieces that need no process: what each ACK acknowledges (Flushed.acked),
one commit shared by every link, the LoRa modem reader, and the MQTT options."""
from __future__ import annotations

import asyncio
import os

import pytest

from qis.gateway.core import GatewayCore
from qis.gateway.errors import GatewayError
from qis.gateway.ingest.commit import Committer
from qis.gateway.ingest.lora import AtReader
from qis.gateway.ingest.mqtt import MqttOptions
from qis.gateway.verify import seal_ack


def test_flushed_names_what_each_ack_acknowledges(registry, store, frames, devices):
    core = GatewayCore(registry, store)
    core.receive("mqtt", frames.full("dev-a", 5))
    core.receive("/dev/lora", frames.compact("dev-b", 9))
    core.receive("/dev/lora", frames.compact("dev-b", 9))  # a retransmission: acknowledged again
    core.receive("mqtt", frames.compact("dev-a", 5, label=1))  # the same counter, other bytes: no ACK
    done = core.flush()
    assert [(p, k.device, c) for p, k, c in done.acked] == [("mqtt", "dev-a", 5), ("/dev/lora", "dev-b", 9),
                                                            ("/dev/lora", "dev-b", 9)]
    assert [(p, ack) for p, ack in done.acks] == [(p, seal_ack(k, c)) for p, k, c in done.acked]


def test_one_commit_for_every_link_each_gets_the_acks(registry, store, frames):
    core = GatewayCore(registry, store)

    class Link:
        def __init__(self):
            self.seen = []

        def deliver(self, done):
            self.seen.append(done)

    async def scenario():
        committed = []
        c = Committer(core, committed.append)
        a, b = Link(), Link()
        c.links += [a, b]
        c.start()
        core.receive("one", frames.full("dev-a", 1))
        core.receive("two", frames.full("dev-b", 2))
        c.schedule()
        c.schedule()  # one flush per turn of the loop, however many links asked
        await asyncio.sleep(0.01)
        c.close()
        return a, b, committed

    a, b, committed = asyncio.run(scenario())
    with_acks = [d for d in a.seen if d.acks]
    assert len(with_acks) == 1 and {p for p, _ in with_acks[0].acks} == {"one", "two"}
    assert a.seen == b.seen and len(committed) == 1


def test_lora_modem_reader_is_strict_and_length_driven():
    frame = bytes(range(10)) + b"\r\n,,+OK\r\n"
    good = b"+OK\r\n+RCV=12,%d," % len(frame) + frame + b",-80,7\r\n+ERR=10\r\n+BAND=868100000\r\n"
    want = [("ok",), ("rcv", 12, frame), ("err", 10), ("other", b"+BAND=868100000")]
    assert AtReader().feed(good) == want
    r, got = AtReader(), []
    for i in range(len(good)):
        got += r.feed(good[i:i + 1])
    assert got == want
    bad = AtReader(max_payload=60).feed(b"+RCV=1,61," + bytes(61) + b",-1,1\r\n+RCV=1,2,abc,-1,1\r\n"
                                        + b"x" * 100 + b"\r\n+OK\r\n")
    assert [e[0] for e in bad][-1] == "ok" and all(e[0] == "error" for e in bad[:-1]) and len(bad) >= 3


def test_mqtt_options_refuse_what_would_leak_or_not_verify(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o600)
    o = MqttOptions("mqtts://qis-gateway@broker.local:8883", secret, tmp_path / "ca.crt")
    assert (o.host, o.port, o.username, o.password, o.tls) == ("broker.local", 8883, "qis-gateway", "s3cret", True)
    with pytest.raises(GatewayError, match="not in the URL"):
        MqttOptions("mqtt://u:pw@h:1883")
    with pytest.raises(GatewayError, match="--mqtt-ca"):
        MqttOptions("mqtts://u@h:8883")
    with pytest.raises(GatewayError, match="mqtt://USER@HOST:PORT"):
        MqttOptions("http://h")
    os.chmod(secret, 0o644)
    with pytest.raises(GatewayError, match="readable by others"):
        MqttOptions("mqtt://u@h:1883", secret)


def test_lora_multi_acks_are_sealed_under_the_key_that_sealed_the_frames(keys_dir, devices, store, frames):
    """A device re-keyed while old frames wait: each batch of counters is acknowledged under
    the key its frames were sealed with, so the device opens every multi-ACK whichever key
    it still holds."""
    from qis.edge import frame as spec
    from qis.edge.ccm import CCM
    from qis.gateway.ingest.lora import LoraIngest, LoraOptions
    from qis.gateway.keys import load_registry, rotate

    old = devices["dev-a"]
    new = rotate("dev-a", keys_dir)
    core = GatewayCore(load_registry(keys_dir), store)
    lora = LoraIngest(core, LoraOptions("/dev/lora", ack_batch=1), Committer(core))
    core.receive("/dev/lora", frames.compact("dev-a", 3))  # sealed under the old key before the rotation
    core.receive("/dev/lora", frames.seal(new.key, new.kid, 4, frames.compact_plaintext()))
    lora.deliver(core.flush())
    downlinks = []
    for _ in range(2):
        lora._queue_downlink()
        downlinks += [data for _, data, purpose in lora._commands if purpose == "downlink"]
        lora._commands.clear()
        lora._duty = type(lora._duty)(869525, 1.0, jitter=False)  # a fresh budget: this test is not about the duty cycle
    assert len(downlinks) == 2
    opened = {}
    for data in downlinks:
        kid = bytes(data[8:12])
        key = {old.kid: old.key, new.kid: new.key}[kid]
        opened[kid] = spec.open_multi_ack(CCM(key), kid, data)
    assert opened == {old.kid: [3], new.kid: [4]}
