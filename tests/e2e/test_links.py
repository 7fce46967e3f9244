"""The three links end to end, with real processes: devices under MicroPython on serial
(ptys), LoRa (the emulated medium) and MQTT (a real mosquitto with the shipped clinic
configuration), one `qis gateway run`. Each fault ends with the same check: every frame a
device saw acknowledged is stored exactly once, and every frame it concluded is stored."""
from __future__ import annotations

import json
import subprocess

import pytest
from procs import QIS, Device, Gateway, dead_letters, outbox, rows, wait_until

from qis.tools.sim.broker import GATEWAY_USER, Broker
from qis.tools.sim.lora_at import AtModem
from qis.tools.sim.lora_medium import Medium

SCALE = 50  # the LoRa medium runs 50x faster than real time (duty cycle and airtime scaled alike)


def check_exactly_once(db, device: Device, name: str, concluded: int) -> None:
    stored = {c for (d, c) in rows(db) if d == name}
    acked = device.acked()
    assert len(acked) == len(set(acked)), "a counter was acknowledged twice to the device"
    assert set(acked) <= stored, "a frame the device saw acknowledged is missing"
    assert len(stored) >= concluded
    assert not [r for r in dead_letters(db) if "replayed counter" in r]
    assert outbox(device.state) == []


def demo(tmp_path, *args: str) -> dict:
    proc = subprocess.run([*QIS, "demo", *args, "--json", "--workdir", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_demo_runs_devices_on_all_three_links_into_one_gateway(tmp_path):
    summary = demo(tmp_path, "--links", "serial,lora,mqtt", "--devices", "2", "--frames", "15", "--model", "rule")
    assert set(summary["links"]) == {"serial", "lora", "mqtt"}
    for link, s in summary["links"].items():
        assert (s["devices"], s["frames_sent"], s["frames_acked"], s["frames_stored"], s["dead_letters"]) == \
               (2, 30, 30, 30, 0), (link, s)
    assert summary["rows_match"] is True and summary["device_errors"] == 0
    # Each device asked once (every 10th beat) and got its answer on its own link: a query
    # frame up, an answer down (a serial record, the MQTT downlink topic, a LoRa downlink).
    for link, s in summary["links"].items():
        assert (s["queries_asked"], s["queries_answered"]) == (2, 2), (link, s)
    assert summary["lora_medium"]["violations"] == 0 and summary["lora_medium"]["too_long"] == 0


def test_lora_at_20_percent_loss_with_collisions_loses_nothing(tmp_path):
    summary = demo(tmp_path, "--links", "lora", "--devices", "6", "--frames", "12", "--model", "rule",
                   "--lora-loss", "0.2", "--time-scale", str(SCALE))
    lora = summary["links"]["lora"]
    assert (lora["frames_sent"], lora["frames_acked"], lora["frames_stored"], lora["dead_letters"]) == (72, 72, 72, 0)
    assert summary["rows_match"] is True
    medium = summary["lora_medium"]
    assert medium["lost"] > 0 and medium["collided"] > 0, medium  # the faults really happened
    assert medium["violations"] == 0  # and nobody broke the duty cycle to recover from them
    assert lora["retransmissions"] > 0


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", ["dev-a", "dev-b"]).start()
    yield b
    b.stop()


def mqtt_gateway_args(b: Broker) -> list[str]:
    return ["--mqtt", f"mqtts://{GATEWAY_USER}@127.0.0.1:{b.port}", "--mqtt-password-file",
            str(b.password_file(GATEWAY_USER)), "--mqtt-ca", str(b.ca)]


def mqtt_device(b: Broker, name: str, keys, state, frames: int) -> Device:
    return Device(None, name, keys, state, frames, model="rule",
                  link=["--mqtt", f"mqtts://127.0.0.1:{b.port}", "--mqtt-password-file", str(b.password_file(name)),
                        "--mqtt-ca", str(b.ca)])


def test_mqtt_broker_killed_and_restarted(tmp_path, keys, broker):
    db = tmp_path / "gw.db"
    gw = Gateway([], db, keys, mqtt_gateway_args(broker))
    dev = mqtt_device(broker, "dev-a", keys, tmp_path / "dev-a", 80)
    try:
        wait_until(lambda: len(dev.acked()) >= 15, what="15 ACKs over MQTT")
        broker.kill()  # SIGKILL: the broker's unsaved state is gone; device and gateway reconnect
        acked_at_kill = len(dev.acked())
        broker.start()
        summary = dev.wait()
    finally:
        gw.stop()
    assert summary["acked"] == 80 and acked_at_kill < 80
    check_exactly_once(db, dev, "dev-a", 80)


def test_mqtt_gateway_killed_and_restarted_gets_what_was_published_meanwhile(tmp_path, keys, broker):
    db = tmp_path / "gw.db"
    gw = Gateway([], db, keys, mqtt_gateway_args(broker))
    dev = mqtt_device(broker, "dev-a", keys, tmp_path / "dev-a", 80)
    try:
        wait_until(lambda: len(dev.acked()) >= 15, what="15 ACKs over MQTT")
        gw.kill()
        stored_at_kill = len(rows(db))
        wait_until(lambda: len(outbox(dev.state)) >= 5, what="frames published while the gateway is down")
        gw.start()  # the persistent session hands over what the broker kept
        summary = dev.wait()
    finally:
        gw.stop()
    assert summary["acked"] == 80 and stored_at_kill < 80
    check_exactly_once(db, dev, "dev-a", 80)


def test_mqtt_device_power_cut_mid_write(tmp_path, keys, broker):
    db = tmp_path / "gw.db"
    state = tmp_path / "dev-a"
    gw = Gateway([], db, keys, mqtt_gateway_args(broker))
    try:
        first = mqtt_device(broker, "dev-a", keys, state, 200)
        wait_until(lambda: len(first.acked()) >= 20, what="20 ACKs over MQTT")
        first.kill()  # power cut: RAM gone, flash (the state directory) kept, maybe mid-write
        acked_before = set(first.acked())
        left_on_flash = {int(name[:-2], 16) for name in outbox(state)}
        second = mqtt_device(broker, "dev-a", keys, state, 30)
        summary = second.wait()
    finally:
        gw.stop()
    assert summary["acked"] >= 30
    stored = {c for (d, c) in rows(db) if d == "dev-a"}
    assert acked_before <= set(second.acked()) <= stored
    assert left_on_flash <= stored
    assert outbox(state) == []
    assert not [r for r in dead_letters(db) if "replayed counter" in r]


def test_lora_gateway_killed_and_restarted(tmp_path, keys):
    db = tmp_path / "gw.db"
    with Medium(tmp_path / "lora.sock", time_scale=SCALE, seed=5) as medium, \
            AtModem(medium.path, "gateway") as modem:
        gw = Gateway([], db, keys, ["--lora", modem.path, "--lora-time-scale", str(SCALE)])
        link = ["--lora", medium.path, "--time-scale", str(SCALE), "--lora-address", "3"]
        dev = Device(None, "dev-a", keys, tmp_path / "dev-a", 30, profile="compact", model="rule", link=link)
        try:
            wait_until(lambda: len(dev.acked()) >= 8, what="8 ACKs over LoRa")
            gw.kill()
            gw.start()
            summary = dev.wait()
        finally:
            gw.stop()
        counters = medium.snapshot()
    assert summary["acked"] == 30
    assert counters.violations == 0
    check_exactly_once(db, dev, "dev-a", 30)


def test_the_raspberry_pi_board_over_mqtt_into_a_gateway(tmp_path, keys, broker):
    """boards/rpi/main.py as its systemd unit runs it (CPython, PYTHONPATH holding edge),
    on the MQTT link (paho-mqtt, TLS with the clinic CA) to the real broker and gateway:
    every frame acknowledged and stored, every question answered."""
    import os
    import sys

    from qis.gateway.keys import read_key_file
    from qis.tools.sim import micropython
    from qis.tools.sim.emulate import REPLAY, resolve_model

    db = tmp_path / "gw.db"
    key = read_key_file(keys / "dev-a.key")[0]
    model_file, model_id = resolve_model("rule")
    config = {"device": "dev-a", "kid": key.kid.hex(), "key": key.key.hex(), "retired": [], "profile": "full",
              "model": model_file, "model_id": model_id, "ask_every": 5, "frames": 12, "state": str(tmp_path / "state"),
              "link": {"kind": "mqtt", "host": "127.0.0.1", "port": broker.port, "password": broker.passwords["dev-a"],
                       "ca": str(broker.ca)},
              "sensor": {"kind": "replay", "path": str(REPLAY)}}
    path = tmp_path / "device.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    main = micropython.board_dir("rpi") / "main.py"
    gw = Gateway([], db, keys, mqtt_gateway_args(broker))
    try:
        proc = subprocess.run([sys.executable, str(main), str(path)], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(micropython.lib_dir())))
    finally:
        gw.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [e for e in map(json.loads, proc.stdout.splitlines()) if e["ev"] == "done"]
    assert done and done[0]["acked"] == 12 and done[0]["answered"] == done[0]["asked"] >= 2, done
    assert len([r for r in rows(db) if r[0] == "dev-a"]) == 12
