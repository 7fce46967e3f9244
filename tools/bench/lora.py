"""The LoRa half of `qis bench link`: what each spreading factor allows a device, and how
many devices one gateway's downlink budget serves.

Computed from the Semtech formula (edge/airtime.py), EU868 (uplink 868.1 MHz at 1 %,
downlinks at 869.525 MHz, 10 %), a compact frame (51 bytes) per outcome:
  physical maximum   3600 s / time on air                (the channel, back to back)
  duty-cycle maximum 3600 s / (100 x time on air)        (what one device may send)
  devices served     0.10 x 3600 s / (downlinks a device needs per hour x their airtime),
                     with one 32-byte ACK per uplink, and with one 34-byte multi-ACK per
                     k uplinks (k = the measured counters per downlink, and 8 = a window)
Measured: one device (emulated SX127x, the real edge/links/lora.py) and the gateway (its
real LoRa ingest on an emulated AT modem) on the emulated medium, sped up so that one duty
period takes about 0.25 s; outcomes acknowledged per emulated hour, from the device's first
uplink to its last ACK (so the last batch's ACK delay counts against it), and the gateway's
own count of counters per downlink. Several runs, median [min-max].
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qis.edge import airtime, frame
from qis.gateway.keys import provision

from ..errors import ToolError
from ..sim import emulate
from ..sim.lora_at import AtModem
from ..sim.lora_medium import Medium
from .runs import summary

UPLINK_KHZ, DOWNLINK_KHZ = 868100, 869525
MEASURED_SF = (7, 9, 12)
QIS = [sys.executable, "-m", "qis.tools.cli.main"]


def analytic(sf: int, acks_per_downlink: float) -> dict:
    up = airtime.time_on_air_us(frame.COMPACT.size, sf) / 1e6
    ack = airtime.time_on_air_us(frame.ACK_SIZE, sf) / 1e6
    multi = airtime.time_on_air_us(frame.MULTI_ACK_SIZE, sf) / 1e6
    per_hour = 3600 / (airtime.duty_divisor(UPLINK_KHZ) * up)
    budget = 3600 / airtime.duty_divisor(DOWNLINK_KHZ)  # seconds of downlink per hour
    return {"sf": sf, "uplink_ms": up * 1e3, "multi_ack_ms": multi * 1e3, "physical_per_hour": 3600 / up,
            "duty_per_hour": per_hour, "devices_single_ack": budget / (per_hour * ack),
            "devices_multi_ack": budget / (per_hour / acks_per_downlink * multi),
            "devices_multi_ack_8": budget / (per_hour / 8 * multi)}


def measured_run(sf: int, frames: int, seed: int, workdir: Path) -> dict:
    period_s = airtime.duty_divisor(UPLINK_KHZ) * airtime.time_on_air_us(frame.COMPACT.size, sf) / 1e6
    scale = period_s / 0.25
    keys, db = workdir / "keys", workdir / "gw.db"
    provision("bench", keys)
    with Medium(workdir / "lora.sock", time_scale=scale, seed=seed) as medium, \
            AtModem(medium.path, "gateway") as modem:
        log = workdir / "gateway.log"
        gateway = subprocess.Popen([*QIS, "gateway", "run", "--db", str(db), "--keys", str(keys), "--lora", modem.path,
                                    "--lora-sf", str(sf), "--lora-time-scale", str(scale)], stderr=log.open("w"))
        deadline = time.monotonic() + 30
        while "gateway ready" not in log.read_text():
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise ToolError(f"gateway did not start: {log.read_text()[-500:]}")
            time.sleep(0.05)
        config = {"kind": "lora", "radio": "sx127x", "medium": medium.path, "sf": sf, "address": 1, "name": "bench",
                  "time_scale": scale}
        state = workdir / "bench"
        emulate.prepare_state(state, keys / "bench.key", "compact", "rule", None, config)
        proc = subprocess.Popen(emulate.device_command(state, frames, 0, "512K"), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=emulate.device_env())
        try:
            # the first conclusion's frame goes out at once: the outbox is empty
            first, acked, done = emulate.timeline(proc.stderr)
        finally:
            proc.wait(timeout=60)
            gateway.terminate()
            gateway.wait(timeout=30)
        counters = medium.snapshot()
    err = log.read_text()
    stats = json.loads(err.strip().splitlines()[-1]) if err.strip() else {}
    if proc.returncode != 0 or len(acked) != frames:
        raise ToolError(f"LoRa bench device (SF{sf}) exited {proc.returncode} with {len(acked)}/{frames} ACKs")
    emulated_h = (acked[-1] - first) * scale / 3600  # the first uplink to the last ACK, tail included
    downlinks = stats.get("lora_downlinks", 0)
    return {"per_hour": frames / emulated_h, "uplinks_per_hour": counters.transmissions / emulated_h, "acks_per_downlink": stats.get("lora_acked_counters", 0) /
            max(1, downlinks), "downlinks": downlinks, "transmissions": done.get("transmissions", 0),
            "violations": counters.violations, "time_scale": scale}


def bench(args: argparse.Namespace, console: Console) -> dict:
    out: dict = {"sf": {}}
    for sf in MEASURED_SF:
        runs = []
        for r in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="qis-bench-lora-") as tmp:
                runs.append(measured_run(sf, args.lora_frames, r, Path(tmp)))
            console.print(f"lora SF{sf} run {r + 1}/{args.runs}: {runs[-1]['per_hour']:.1f} outcomes/h, "
                          f"{runs[-1]['acks_per_downlink']:.2f} counters per downlink")
        out["sf"][sf] = {"runs": runs, "per_hour": summary([x["per_hour"] for x in runs]),
                         "acks_per_downlink": summary([x["acks_per_downlink"] for x in runs]),
                         "violations": sum(x["violations"] for x in runs)}
    k = min(r["acks_per_downlink"]["median"] for r in out["sf"].values())
    out["acks_per_downlink_used"] = k
    out["analytic"] = [analytic(sf, k) for sf in range(7, 13)]
    return out


def show(console: Console, result: dict) -> None:
    k = result["acks_per_downlink_used"]
    table = Table(title="qis bench link: LoRa EU868, compact frames (51 B), one device; measured on the emulated medium")
    for col in ("SF", "uplink ms", "physical max /h", "duty-cycle max /h", "measured /h (median [min-max])",
                "counters per downlink", "devices served: 1 ACK per uplink", f"multi-ACK (k={k:.1f})",
                "multi-ACK (k=8)"):
        table.add_column(col, justify="right")
    for a in result["analytic"]:
        m = result["sf"].get(a["sf"]) or result["sf"].get(str(a["sf"]))
        measured = (f"{m['per_hour']['median']:.1f} [{m['per_hour']['min']:.1f}-{m['per_hour']['max']:.1f}]"
                    if m else "-")
        per = f"{m['acks_per_downlink']['median']:.2f}" if m else "-"
        table.add_row(str(a["sf"]), f"{a['uplink_ms']:.1f}", f"{a['physical_per_hour']:,.0f}",
                      f"{a['duty_per_hour']:.1f}", measured, per, f"{a['devices_single_ack']:.1f}",
                      f"{a['devices_multi_ack']:.1f}", f"{a['devices_multi_ack_8']:.1f}")
    console.print(table)
