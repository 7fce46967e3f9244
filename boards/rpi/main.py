# Raspberry Pi board: the same edge code on CPython, run by systemd (qis-edge-device.service).
#   python3 main.py /etc/qis-edge/device.json        (PYTHONPATH holds the `edge` package)
# The config is the unix board's (device, kid, key, retired, profile, model, model_id,
# ask_every) plus "state" (the counter and outbox folder; systemd's StateDirectory),
# "frames" (0: run until stopped), "link" (uart or mqtt) and "sensor" (boards/rpi/README.md). Events go
# to stdout as JSON lines (the journal).
import json
import os
import sys
from array import array

from edge import device, store
from edge.ccm import CCM
from edge.compat import ticks_ms, time_s
from edge.ecg.app import EcgApp
from edge.ecg.conclude import QemModel, RuleModel
from edge.frame import profile
from edge.node import Node

_FOREVER = 1 << 62


def report(ev, **fields):
    fields["ev"] = ev
    print(json.dumps(fields), flush=True)


def replay(path, loop=True):
    """int16 little-endian samples at 360 Hz from a recording, looping."""
    buf = array("h", bytes(1024))
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf) // 2
            if n == 0:
                if not loop:
                    return
                f.seek(0)
                continue
            yield from buf[:n]


def serial_samples(port):
    """int16 little-endian samples streamed by a serial ECG front end (e.g. a
    microcontroller sampling an AD8232 at 360 Hz)."""
    pair = bytearray(2)
    while True:
        if port.readinto(pair) == 2:
            yield int.from_bytes(pair, "little", signed=True)


def open_serial(cfg, timeout):
    import serial  # pyserial: a dependency of qis-edge

    return serial.Serial(cfg["port"], cfg.get("baud", 115200), timeout=timeout)


def main(argv):
    with open(argv[1]) as f:
        config = json.load(f)
    prof = profile(config["profile"])
    key, kid = bytes.fromhex(config["key"]), bytes.fromhex(config["kid"])
    retired = [(bytes.fromhex(r["kid"]), CCM(bytes.fromhex(r["key"]))) for r in config.get("retired", ())]
    state = config.get("state", "/var/lib/qis-edge")
    os.makedirs(state, 0o700, exist_ok=True)  # systemd's StateDirectory makes it; a manual run may not
    link_cfg = config.get("link", {"kind": "uart", "port": "/dev/serial0"})
    sensor = config.get("sensor", {"kind": "replay"})
    if sensor["kind"] == "replay":
        samples = replay(sensor["path"], sensor.get("loop", True))
    elif sensor["kind"] == "serial":
        samples = serial_samples(open_serial(sensor, None))
    else:
        raise SystemExit("sensor %r: use replay or serial" % sensor["kind"])
    model = RuleModel() if config["model"] == "rule" else QemModel(config["model"], config["model_id"])
    app = EcgApp(samples, model, prof)
    ccm, counter = CCM(key), store.Counter(state)
    node = Node(ccm, kid, counter, store.Outbox(state), prof, retired=retired)
    asker = None
    if config.get("ask_every", 0):
        from edge.query import Asker

        asker = Asker(ccm, kid, counter, prof)
    link = make_link(link_cfg, config["device"])
    frames = config.get("frames", 0) or _FOREVER
    ask_every = config.get("ask_every", 0)
    config = None  # the key is not kept around in plain sight
    try:
        return device.run(node, link, app, frames, ticks_ms, time_s, report, asker, ask_every)
    finally:
        if hasattr(link, "close"):
            link.close()


def make_link(cfg, device_id):
    """The config's link: "uart" (a pyserial port) or "mqtt" (paho-mqtt to the clinic
    broker: host, port, password, and ca, the clinic CA's PEM file, for TLS)."""
    kind = cfg.get("kind", "uart")
    if kind == "uart":
        from edge.links.uart import UartLink

        return UartLink(open_serial(cfg, 0))
    if kind == "mqtt":
        from paho_link import PahoMqttLink

        return PahoMqttLink(cfg["host"], cfg.get("port", 8883 if cfg.get("ca") else 1883), device_id,
                            cfg.get("password"), cfg.get("ca"))
    raise SystemExit("link %r: this board has uart and mqtt" % kind)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
