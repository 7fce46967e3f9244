"""`qis demo`: a gateway and several emulated devices on replayed ECG, end to end.

Every part is the real one: each device is the edge code under the MicroPython unix
port, talking COBS-framed COSE frames over its own pty "serial cable" to a
`qis gateway run` process that stores into SQLite. At the end the demo checks the
database against what the devices say they concluded and had acknowledged.
"""
from __future__ import annotations

import argparse
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

from ..errors import ToolError
from . import emulate, micropython
from .loopback import Loopback

REPLAY_SAMPLES = 108000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=3, help="emulated devices (default 3)")
    parser.add_argument("--frames", type=int, default=50, help="outcomes per device (default 50)")
    parser.add_argument("--profile", default="full", choices=["compact", "full"])
    parser.add_argument("--model", default="cnn", choices=["cnn", "mlp", "rule"],
                        help="the devices' model: the int8 ECG5000 CNN (default), the MLP, or the RR rule")
    parser.add_argument("--bit-flip-rate", type=float, default=0.0, help="line noise: bit flips per byte")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="line noise: dropped bytes per byte")
    parser.add_argument("--workdir", type=Path, help="keep keys, database and device flash here")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")


class DeviceRun:
    """One emulated device process and what it reported."""

    def __init__(self, name: str, proc: subprocess.Popen) -> None:
        self.name = name
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


def start_gateway(paths: list[str], db: Path, keys: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qis.tools.cli.main", "gateway", "run", "--db", str(db), "--keys", str(keys)]
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


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qis-demo-"))
    keys, db = workdir / "keys", workdir / "outcomes.db"
    names = [f"ecg-{i + 1:02d}" for i in range(args.devices)]
    for name in names:
        if not (keys / f"{name}.key").exists():
            provision(name, keys)
    links = [Loopback(bit_flip_rate=args.bit_flip_rate, drop_rate=args.drop_rate, seed=i).open()
             for i in range(args.devices)]
    started = time.monotonic()
    gateway = start_gateway([link.b_path for link in links], db, keys)
    devices: list[DeviceRun] = []
    try:
        for i, (name, link) in enumerate(zip(names, links)):
            state = workdir / "devices" / name
            emulate.prepare_state(state, keys / f"{name}.key", args.profile, args.model)
            fd = emulate.open_raw(link.a_path)
            offset = (i * REPLAY_SAMPLES) // max(1, args.devices)
            proc = subprocess.Popen(emulate.device_command(state, args.frames, offset, "512K"), stdin=fd, stdout=fd,
                                    stderr=subprocess.PIPE, env=micropython.env())
            os.close(fd)
            devices.append(DeviceRun(name, proc))
        total = args.devices * args.frames
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=not console.is_terminal) as progress:
            sent = progress.add_task("concluded + sent", total=total)
            acked = progress.add_task("acknowledged   ", total=total)
            while any(d.proc.poll() is None for d in devices):
                progress.update(sent, completed=sum(len(d.concluded) for d in devices))
                progress.update(acked, completed=sum(len(d.acked) for d in devices))
                if time.monotonic() - started > args.timeout:
                    raise ToolError(f"the demo did not finish in {args.timeout:.0f} s (--timeout)")
                time.sleep(0.1)
            progress.update(sent, completed=sum(len(d.concluded) for d in devices))
            progress.update(acked, completed=sum(len(d.acked) for d in devices))
    finally:
        for dev in devices:
            if dev.proc.poll() is None:
                dev.proc.kill()
            dev.proc.wait()
            dev.thread.join(timeout=5)
        gateway.terminate()
        gateway.wait(timeout=30)
        for link in links:
            link.close()
    elapsed = time.monotonic() - started
    for dev in devices:
        if dev.proc.returncode:
            dev.errors.append(f"exited with status {dev.proc.returncode}")
    store = OutcomeStore(db, readonly=True)
    try:
        counts, rows_match = store.counts(), check_rows(store, devices)
    finally:
        store.close()
    summary = {
        "devices": args.devices,
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
    show(console, devices, summary, MODELS[args.model][2])
    for dev in devices:
        for err in dev.errors[:5]:
            console.print(f"[red]{dev.name}: {err}")
    if args.json:
        print(json.dumps(summary))
    ok = all(d.proc.returncode == 0 for d in devices) and summary["rows_match"]
    return 0 if ok else 1


def show(console: Console, devices: list[DeviceRun], summary: dict, names: list[str]) -> None:
    table = Table(title="qis demo")
    for col in ("device", "concluded", "acked", "transmissions"):
        table.add_column(col, justify="right")
    table.add_column("conclusions")
    for dev in devices:
        labels = Counter(dev.concluded.values())
        table.add_row(dev.name, str(len(dev.concluded)), str(len(dev.acked)),
                      str(dev.summary.get("transmissions", "-")),
                      ", ".join(f"{n} {names[label]}" for label, n in sorted(labels.items())))
    console.print(table)
    console.print(
        f"stored {summary['frames_stored']} outcomes, {summary['duplicates']} retransmissions recognised, "
        f"{summary['dead_letters']} dead letters, rows match devices: {summary['rows_match']}, "
        f"{summary['elapsed_s']} s (database {summary['workdir']}/outcomes.db)"
    )
