"""`qis demo`: a gateway and several emulated devices on replayed ECG, end to end.

Every part is the real one: each device is the edge code under the MicroPython unix
port, on its link into one `qis gateway run` process that stores into SQLite:
  serial  COBS-framed frames over the device's own pty "serial cable" (tools/sim/loopback.py)
  lora    compact frames on the emulated radio medium (tools/sim/lora_medium.py), every
          other device with an AT-command module instead of an SX127x; the gateway's
          modem is an emulated AT module; ACKs come back as multi-ACK downlinks
  mqtt    frames through a real mosquitto with the shipped clinic configuration (TLS,
          passwords, ACL) started for the demo (tools/sim/broker.py)
At the end the demo checks the database against what the devices say they concluded and
had acknowledged, per link.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qis.edge.ecg.registry import MODELS
from qis.gateway.keys import provision
from qis.gateway.store import OutcomeStore

from ..errors import ToolError, UsageError
from . import emulate
from .broker import GATEWAY_USER, Broker
from .lora_at import AtModem
from .lora_medium import Medium
from .loopback import Loopback

REPLAY_SAMPLES = 108000
LINKS = ("serial", "lora", "mqtt")
PREFIX = {"serial": "ecg", "lora": "lora", "mqtt": "mqtt"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--links", default="serial", help="comma-separated: serial, lora, mqtt (default serial)")
    parser.add_argument("--devices", type=int, default=3, help="emulated devices per link (default 3)")
    parser.add_argument("--frames", type=int, default=50, help="outcomes per device (default 50)")
    parser.add_argument("--profile", default="full", choices=["compact", "full"],
                        help="frame profile on serial and MQTT (LoRa always carries compact frames)")
    parser.add_argument("--lora-loss", type=float, default=0.0, help="LoRa: packets lost, per receiver")
    parser.add_argument("--time-scale", type=float, default=50.0,
                        help="LoRa: the emulated medium runs this many times faster than real time (default 50)")
    parser.add_argument("--model", default="cnn", choices=["cnn", "mlp", "rule"],
                        help="the devices' model: the int8 ECG5000 CNN (default), the MLP, or the RR rule")
    parser.add_argument("--bit-flip-rate", type=float, default=0.0, help="line noise: bit flips per byte")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="line noise: dropped bytes per byte")
    parser.add_argument("--workdir", type=Path, help="keep keys, database and device flash here")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")


class DeviceRun:
    """One emulated device process and what it reported."""

    def __init__(self, name: str, proc: subprocess.Popen, link: str = "serial") -> None:
        self.name = name
        self.link = link
        self.proc = proc
        self.concluded: dict[int, int] = {}  # counter -> label
        self.acked: set[int] = set()
        self.summary: dict = {}
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            try:
                event = json.loads(line)
            except ValueError:
                self.errors.append(line)
                continue
            kind = event.get("ev")
            if kind == "concluded":
                self.concluded[event["counter"]] = event["label"]
            elif kind == "acked":
                self.acked.add(event["counter"])
            elif kind == "done":
                self.summary = event
            elif kind == "error":
                self.errors.append(event.get("reason", line))


def start_gateway(paths: list[str], db: Path, keys: Path, extra: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qis.tools.cli.main", "gateway", "run", "--db", str(db), "--keys", str(keys), *extra]
    for path in paths:
        cmd += ["--serial", path]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if "gateway ready" not in line:
        proc.kill()
        raise ToolError(f"gateway did not start: {line}{proc.stderr.read()}")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
    return proc


def check_rows(store: OutcomeStore, devices: list[DeviceRun]) -> bool:
    """True if the database holds exactly the devices' conclusions, labels included."""
    return all(store.labels(dev.name) == dev.concluded for dev in devices)


def parse_links(text: str) -> list[str]:
    links = [x.strip() for x in text.split(",") if x.strip()]
    if not links or not set(links) <= set(LINKS) or len(set(links)) != len(links):
        raise UsageError(f"--links takes serial, lora and mqtt, comma-separated, not {text!r}")
    return links


class Rig(contextlib.ExitStack):
    """The links' emulated parts: serial cables, the LoRa medium and modems, the broker;
    the gateway's options for them; each device's link config and UART."""

    def __init__(self, args: argparse.Namespace, workdir: Path, links: list[str], names: dict[str, list[str]]) -> None:
        super().__init__()
        self.args = args
        self.serial: dict[str, Loopback] = {}
        self.gateway_args: list[str] = []
        self.medium: Medium | None = None
        self.broker: Broker | None = None
        if "serial" in links:
            for i, name in enumerate(names["serial"]):
                self.serial[name] = self.enter_context(Loopback(bit_flip_rate=args.bit_flip_rate,
                                                                drop_rate=args.drop_rate, seed=i))
        if "lora" in links:
            self.medium = self.enter_context(Medium(workdir / "lora.sock", loss=args.lora_loss,
                                                    time_scale=args.time_scale, seed=1))
            modem = self.enter_context(AtModem(self.medium.path, "gateway"))
            self.gateway_args += ["--lora", modem.path, "--lora-time-scale", str(args.time_scale)]
        if "mqtt" in links:
            self.broker = Broker(workdir / "broker", names["mqtt"]).start()
            self.callback(self.broker.stop)
            self.gateway_args += ["--mqtt", f"mqtts://{GATEWAY_USER}@127.0.0.1:{self.broker.port}",
                                  "--mqtt-password-file", str(self.broker.password_file(GATEWAY_USER)),
                                  "--mqtt-ca", str(self.broker.ca)]

    def device_link(self, link: str, name: str, index: int) -> tuple[dict, str | None]:
        """(the device's link config, the serial path its UART is on, if any)."""
        if link == "serial":
            return {"kind": "uart"}, self.serial[name].a_path
        if link == "lora":
            return {"kind": "lora", "radio": "at" if index % 2 else "sx127x", "medium": self.medium.path, "sf": 7,
                    "address": index + 1, "name": name, "time_scale": self.args.time_scale}, None
        return {"kind": "mqtt", "host": "127.0.0.1", "port": self.broker.port, "tls": True, "device": name,
                "password": self.broker.passwords[name]}, None


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    links = parse_links(args.links)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qis-demo-"))
    keys, db = workdir / "keys", workdir / "outcomes.db"
    names = {link: [f"{PREFIX[link]}-{i + 1:02d}" for i in range(args.devices)] for link in links}
    for name in (n for link in links for n in names[link]):
        if not (keys / f"{name}.key").exists():
            provision(name, keys)
    started = time.monotonic()
    devices: list[DeviceRun] = []
    with Rig(args, workdir, links, names) as rig:
        gateway = start_gateway([lb.b_path for lb in rig.serial.values()], db, keys, rig.gateway_args)
        try:
            for link in links:
                for i, name in enumerate(names[link]):
                    state = workdir / "devices" / name
                    config, serial_path = rig.device_link(link, name, i)
                    profile = "compact" if link == "lora" else args.profile
                    emulate.prepare_state(state, keys / f"{name}.key", profile, args.model, None, config,
                                          rig.broker.ca if link == "mqtt" else None)
                    fd = rig.enter_context(emulate.device_io(config, serial_path, name))
                    offset = (i * REPLAY_SAMPLES) // max(1, args.devices)
                    io = fd if fd is not None else subprocess.DEVNULL
                    proc = subprocess.Popen(emulate.device_command(state, args.frames, offset, "512K"), stdin=io,
                                            stdout=io, stderr=subprocess.PIPE, env=emulate.device_env())
                    if fd is not None:
                        os.close(fd)
                    devices.append(DeviceRun(name, proc, link))
            follow(console, devices, len(devices) * args.frames, started, args.timeout)
        finally:
            for dev in devices:
                if dev.proc.poll() is None:
                    dev.proc.kill()
                dev.proc.wait()
                dev.thread.join(timeout=5)
            gateway.terminate()
            gateway.wait(timeout=30)
        medium = rig.medium.snapshot() if rig.medium is not None else None
    elapsed = time.monotonic() - started
    for dev in devices:
        if dev.proc.returncode:
            dev.errors.append(f"exited with status {dev.proc.returncode}")
    store = OutcomeStore(db, readonly=True)
    try:
        counts, rows_match = store.counts(), check_rows(store, devices)
        per_link = {link: link_summary(store, [d for d in devices if d.link == link]) for link in links}
    finally:
        store.close()
    summary = {
        "devices": len(devices),
        "links": per_link,
        "profile": args.profile,
        "frames_sent": sum(len(d.concluded) for d in devices),
        "frames_acked": sum(len(d.acked) for d in devices),
        **counts,
        "transmissions": sum(d.summary.get("transmissions", 0) for d in devices),
        "retransmissions": sum(d.summary.get("retransmissions", 0) for d in devices),
        "rows_match": rows_match,
        "device_errors": sum(len(d.errors) for d in devices),
        "elapsed_s": round(elapsed, 2),
        "workdir": str(workdir),
    }
    if medium is not None:
        summary["lora_medium"] = {k: v for k, v in vars(medium).items() if k != "airtime_us"}
    show(console, devices, summary, MODELS[args.model][2])
    for dev in devices:
        for err in dev.errors[:5]:
            console.print(f"[red]{dev.name}: {err}")
    if args.json:
        print(json.dumps(summary))
    ok = all(d.proc.returncode == 0 for d in devices) and summary["rows_match"]
    return 0 if ok else 1


def follow(console: Console, devices: list[DeviceRun], total: int, started: float, timeout: float) -> None:
    """Show progress until every device process has ended."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=not console.is_terminal) as progress:
        sent = progress.add_task("concluded + sent", total=total)
        acked = progress.add_task("acknowledged   ", total=total)
        while True:
            progress.update(sent, completed=sum(len(d.concluded) for d in devices))
            progress.update(acked, completed=sum(len(d.acked) for d in devices))
            if all(d.proc.poll() is not None for d in devices):
                return
            if time.monotonic() - started > timeout:
                raise ToolError(f"the demo did not finish in {timeout:.0f} s (--timeout)")
            time.sleep(0.1)


def link_summary(store: OutcomeStore, devices: list[DeviceRun]) -> dict:
    """Frames sent, acknowledged and stored, and the dead letters, of one link's devices."""
    mine = {d.name for d in devices}
    return {"devices": len(devices), "frames_sent": sum(len(d.concluded) for d in devices),
            "frames_acked": sum(len(d.acked) for d in devices),
            "frames_stored": sum(len(store.labels(d.name)) for d in devices),
            "dead_letters": sum(1 for row in store.dead_letters() if row["device"] in mine),
            "retransmissions": sum(d.summary.get("retransmissions", 0) for d in devices)}


def show(console: Console, devices: list[DeviceRun], summary: dict, names: list[str]) -> None:
    table = Table(title="qis demo")
    for col in ("device", "link", "concluded", "acked", "transmissions"):
        table.add_column(col, justify="right")
    table.add_column("conclusions")
    for dev in devices:
        labels = Counter(dev.concluded.values())
        table.add_row(dev.name, dev.link, str(len(dev.concluded)), str(len(dev.acked)),
                      str(dev.summary.get("transmissions", "-")),
                      ", ".join(f"{n} {names[label]}" for label, n in sorted(labels.items())))
    console.print(table)
    console.print(
        f"stored {summary['frames_stored']} outcomes, {summary['duplicates']} retransmissions recognised, "
        f"{summary['dead_letters']} dead letters, rows match devices: {summary['rows_match']}, "
        f"{summary['elapsed_s']} s (database {summary['workdir']}/outcomes.db)"
    )
