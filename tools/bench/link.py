"""`qis bench link`: what each link delivers against the limit its medium sets.

Serial: one MicroPython device (the RR rule, so the model is not what limits) sends N full
frames over a `qis loopback` cable paced at --baud to a `qis gateway run`. The subject is
the acknowledged payload per second (512-byte frames, timed on the host from the first to
the last ACK the device reports); the baseline, measured interleaved on the same kind of
cable, is a bulk byte stream (the line's real rate). Shares:
  clean line:  acknowledged payload / line rate (baud / 10 bytes a second)        goal >= 0.9
  noisy line:  acknowledged payload / ((1 - frame error rate) x line rate)        goal >= 0.7
where the frame error rate is 1 - (1 - p)^520 for p flips + drops per byte and a 520-byte
stream record: the share of frames the line damages, so a retransmission scheme that lost
nothing but damaged frames would reach 1.

LoRa (tools/bench/lora.py): outcomes per hour per device that each spreading factor
allows under the EU868 duty cycle, next to the physical maximum, the number of devices
one gateway's downlink budget serves, and a measured run on the emulated medium.

A benchmark, not a test: progress on stderr, tables, one JSON object last on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qis.gateway.keys import provision

from ..errors import ToolError, UsageError
from ..sim import emulate, micropython
from ..sim.demo import start_gateway
from ..sim.loopback import Loopback
from .frames import machine
from .runs import summary

FRAME = 512
RECORD = 520  # a full frame's stream record: COBS + CRC + delimiters


def frame_error_rate(per_byte: float, record: int = RECORD) -> float:
    return 1.0 - (1.0 - per_byte) ** record


def line_bytes_per_s(baud: int, seconds: float, seed: int) -> float:
    """The baseline: a bulk byte stream through a paced cable, bytes per second delivered."""
    import serial

    with Loopback(baud=baud, seed=seed) as lb:
        a = serial.Serial(lb.a_path, timeout=0.05)
        b = serial.Serial(lb.b_path, timeout=0.05)
        data = bytes(range(256)) * max(1, int(baud / 10 * seconds) // 256)
        writer = threading.Thread(target=a.write, args=(data,))
        t0 = time.monotonic()
        writer.start()
        got = 0
        while got < len(data):
            got += len(b.read(4096))
        elapsed = time.monotonic() - t0
        writer.join()
        a.close()
        b.close()
    return len(data) / elapsed


def serial_run(frames: int, baud: int, per_byte: float, seed: int, workdir: Path) -> dict:
    """One device over one paced cable: acknowledged frames and the time they took."""
    keys, db = workdir / "keys", workdir / "gw.db"
    provision("bench", keys)
    state = workdir / "bench"
    emulate.prepare_state(state, keys / "bench.key", "full", "rule")
    with Loopback(baud=baud, bit_flip_rate=per_byte / 2, drop_rate=per_byte / 2, seed=seed) as lb:
        gateway = start_gateway([lb.b_path], db, keys)
        fd = emulate.open_raw(lb.a_path)
        proc = subprocess.Popen(emulate.device_command(state, frames, 0, "512K"), stdin=fd, stdout=fd,
                                stderr=subprocess.PIPE, env=micropython.env())
        os.close(fd)
        try:
            _, acked, done = emulate.timeline(proc.stderr)
        finally:
            proc.wait(timeout=60)
            gateway.terminate()
            gateway.wait(timeout=30)
        counters = lb.counters()
    if proc.returncode != 0 or len(acked) != frames:
        raise ToolError(f"serial bench device exited {proc.returncode} with {len(acked)}/{frames} ACKs")
    elapsed = acked[-1] - acked[0]
    damaged = sum(c.flipped + c.dropped for c in counters.values())
    return {"payload_per_s": (frames - 1) * FRAME / elapsed, "elapsed_s": elapsed,
            "transmissions": done.get("transmissions", 0), "retransmissions": done.get("retransmissions", 0),
            "damaged_bytes": damaged}


def serial_bench(args: argparse.Namespace, console: Console) -> dict:
    rate = args.baud / 10
    out = {}
    for name, per_byte in (("clean", 0.0), ("noisy", args.noise)):
        ideal = (1 - frame_error_rate(per_byte)) * rate
        runs = []
        for r in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="qis-bench-link-") as tmp:
                if r % 2:
                    subject = serial_run(args.frames, args.baud, per_byte, r, Path(tmp))
                    baseline = line_bytes_per_s(args.baud, 3.0, r)
                else:
                    baseline = line_bytes_per_s(args.baud, 3.0, r)
                    subject = serial_run(args.frames, args.baud, per_byte, r, Path(tmp))
            subject.update(line_bytes_per_s=baseline, share_of_line=subject["payload_per_s"] / rate,
                           share_of_ideal=subject["payload_per_s"] / ideal,
                           share_of_measured_line=subject["payload_per_s"] / baseline)
            runs.append(subject)
            console.print(f"serial {name} run {r + 1}/{args.runs}: {subject['payload_per_s']:,.0f} B/s acknowledged "
                          f"({subject['share_of_ideal']:.3f} of ideal), line {baseline:,.0f} B/s, "
                          f"{subject['retransmissions']} retransmissions")
        out[name] = {"per_byte_error": per_byte, "frame_error_rate": frame_error_rate(per_byte),
                     "ideal_payload_per_s": ideal, "runs": runs,
                     **{k: summary([r[k] for r in runs]) for k in ("payload_per_s", "share_of_ideal", "share_of_line",
                                                                    "line_bytes_per_s", "retransmissions")}}
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=5, help="runs of every measurement (default 5)")
    parser.add_argument("--frames", type=int, default=300, help="frames per serial run (default 300)")
    parser.add_argument("--baud", type=int, default=115200, help="serial line rate (default 115200)")
    parser.add_argument("--noise", type=float, default=2.6e-3,
                        help="noisy line: bytes flipped or dropped per byte, half each (default 2.6e-3)")
    parser.add_argument("--links", default="serial,lora", help="which links to measure (default serial,lora)")
    parser.add_argument("--lora-frames", type=int, default=24, help="frames per measured LoRa run (default 24)")


def run(args: argparse.Namespace) -> int:
    if args.runs < 5:
        raise UsageError("--runs must be at least 5 (a median needs a spread)")
    links = set(args.links.split(","))
    if not links <= {"serial", "lora"}:
        raise UsageError(f"--links takes serial and/or lora, not {args.links!r}")
    console = Console(stderr=True)
    result: dict = {"machine": machine(), "runs": args.runs}
    if "serial" in links:
        result["serial"] = serial_bench(args, console)
    if "lora" in links:
        from . import lora

        result["lora"] = lora.bench(args, console)
    show(result, args)
    print(json.dumps(result))
    return 0


def _fmt(s: dict, spec: str) -> str:
    return f"{s['median']:{spec}} [{s['min']:{spec}}-{s['max']:{spec}}]"


def show(result: dict, args: argparse.Namespace) -> None:
    console = Console()
    if "serial" in result:
        table = Table(title=f"qis bench link: serial at {args.baud} baud, {args.frames} full frames, "
                            f"{args.runs} runs, median [min-max]")
        for col in ("line", "frame error rate", "acknowledged B/s", "ideal B/s", "share of ideal", "share of line",
                    "measured line B/s", "retransmissions"):
            table.add_column(col, justify="left" if col == "line" else "right")
        for name, r in result["serial"].items():
            table.add_row(name, f"{r['frame_error_rate']:.3f}", _fmt(r["payload_per_s"], ",.0f"),
                          f"{r['ideal_payload_per_s']:,.0f}", _fmt(r["share_of_ideal"], ".3f"),
                          _fmt(r["share_of_line"], ".3f"), _fmt(r["line_bytes_per_s"], ",.0f"),
                          _fmt(r["retransmissions"], ".0f"))
        console.print(table)
    if "lora" in result:
        from . import lora

        lora.show(console, result["lora"])
