"""`qis fuzz TARGET --seconds N`: long structure-aware fuzz runs of every decoder of untrusted bytes.

Targets (each feeds tools/fuzz/inputs.py's hostile bytes to the real code):

  frame       the gateway's frame path (verify.open_outcome) on unauthenticated bytes
  plaintext   the same path on hostile plaintexts sealed under a registered key
  cbor        the edge CBOR decoder under CPython (what decodes must re-encode to itself)
  stream      the gateway's serial record decoder (gateway/ingest/serial.py)
  at          the gateway's reader of LoRa modem output (gateway/ingest/lora.py)
  cbor-mp, stream-mp, ack-mp, multiack-mp, mqtt-mp, at-mp
              the edge CBOR decoder, the device's stream decoder, its ACK and multi-ACK
              checks, its MQTT packet decoder and its AT response parser, under the real
              MicroPython unix port (tools/fuzz/mp_target.py)

Each input must return within a bound and raise nothing but the documented rejection
(Rejected on the gateway, a QisError subclass in edge code). The report gives the number
of inputs, the unexpected exceptions (with the first inputs that raised them, as hex),
the worst time seen for one input, the 8 slowest inputs re-timed (fastest of 5 runs
each, so a collector pause or a lost time slice does not count as the input's cost),
and that re-timed worst as a ratio to the median time of a valid input of the same
target, measured interleaved in the same run (one valid input every 100). Exit status 1
if anything unexpected happened.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qis.edge import cbor, stream
from qis.edge import frame as spec
from qis.edge.ccm import CCM
from qis.edge.errors import QisError
from qis.gateway.ingest.lora import AtReader
from qis.gateway.ingest.serial import RecordDecoder
from qis.gateway.keys import DeviceKey
from qis.gateway.verify import Rejected, open_outcome

from ..sim import micropython
from . import inputs

KEY = bytes(range(16))
KID = bytes.fromhex("a1b2c3d4")  # the same device as tools/fuzz/mp_target.py
DEVICE = DeviceKey("fuzz-device", KID, KEY)
REGISTRY = {KID: DEVICE}
VALID_EVERY = 100
SLOWEST = 8
MP_TARGETS = ("cbor-mp", "stream-mp", "ack-mp", "multiack-mp", "mqtt-mp", "at-mp")
TARGETS = ("frame", "plaintext", "cbor", "stream", "at", *MP_TARGETS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=TARGETS + ("all",), help="what to fuzz ('all': each in turn)")
    parser.add_argument("--seconds", type=float, default=60, help="stop after this long per target (default 60)")
    parser.add_argument("--inputs", type=int, default=0, help="stop after this many inputs per target (0: no limit)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per target last")


def valid_frames() -> list[bytes]:
    """One valid frame of each profile, for mutation and as the timing baseline."""
    ccm = CCM(KEY)
    compact = spec.encode_outcome(spec.COMPACT, 1764201600, 2, 1, 3, 201, bytes.fromhex("fcca438a"))
    full = spec.encode_outcome(spec.FULL, 1764201600, 3, 1, 2, 201, bytes(range(16)), [[2, 201], [0, 40]])
    return [bytes(spec.seal(ccm, KID, n, pt, spec.UPLINK_IV)) for n, pt in ((7, compact), (8, full))]


def _ack() -> bytes:
    return bytes(spec.seal_ack(CCM(KEY), KID, 7))


def _multi_ack() -> bytes:
    return bytes(spec.seal_multi_ack(CCM(KEY), KID, [40, 38, 9]))


def _mqtt_publish(payload: bytes) -> bytes:
    """What a broker sends a device: its downlink PUBLISH (QoS 1) of payload."""
    topic = b"qis/v1/fuzz-device/down"
    body = len(topic).to_bytes(2, "big") + topic + b"\x00\x07" + payload
    return b"\x32" + inputs._varint(len(body)) + body


def _at_rcv(payload: bytes) -> bytes:
    return b"+RCV=5,%d," % len(payload) + payload + b",-60,9\r\n"


def host_target(name: str, rng: random.Random) -> tuple[Callable[[], bytes], Callable[[bytes], None], bytes]:
    """(input generator, the call under test, a valid input) for a CPython target."""
    valid = valid_frames()
    if name == "frame":
        def check(data: bytes) -> None:
            try:
                open_outcome(data, REGISTRY)
            except Rejected:
                pass
        return lambda: inputs.frame_like(rng, valid), check, valid[1]
    if name == "plaintext":
        ccm = CCM(KEY)
        counter = iter(range(1 << 32))

        def sealed() -> bytes:
            prof = rng.choice([spec.COMPACT, spec.FULL])
            return bytes(spec.seal(ccm, KID, next(counter), inputs.plaintext_like(rng, prof.plaintext_len),
                                   spec.UPLINK_IV))
        return sealed, host_target("frame", rng)[1], valid[1]
    if name == "cbor":
        def decode(data: bytes) -> None:
            try:
                value = cbor.loads(data)
            except QisError:
                return
            if cbor.dumps(value) != data:
                raise ValueError("decoded a non-deterministic encoding")
        return lambda: inputs.cbor_item(rng), decode, cbor.dumps([1, 1, 1764201600, 3, 1, 2, 201, bytes(16),
                                                                  [[2, 201], [0, 40]], {}])
    if name == "stream":
        decoder = RecordDecoder()
        return lambda: inputs.stream_like(rng, valid), decoder.feed, stream.encode(valid[1])
    if name == "at":
        reader = AtReader()
        return lambda: inputs.at_like(rng, [valid[0], _multi_ack()]), reader.feed, _at_rcv(valid[0])
    raise ValueError(name)


def mp_input(name: str, rng: random.Random) -> tuple[Callable[[], bytes], bytes]:
    """(input generator, a valid input) for a MicroPython target."""
    valid = valid_frames()
    ack = _ack()
    if name == "cbor-mp":
        return (lambda: inputs.cbor_item(rng)), cbor.dumps([1, 1, 1764201600, 3, 1, 2, 201, bytes(16), [], {}])
    if name == "stream-mp":
        return (lambda: inputs.stream_like(rng, [ack, *valid])), stream.encode(ack)
    multi = _multi_ack()
    if name == "multiack-mp":
        return (lambda: inputs.frame_like(rng, [multi, ack])), multi
    if name == "mqtt-mp":
        frames = [_mqtt_publish(ack), _mqtt_publish(multi), b"\x20\x02\x00\x00", b"\x90\x03\x00\x01\x01", b"\xd0\x00"]
        return (lambda: inputs.mqtt_like(rng, frames)), _mqtt_publish(multi)
    if name == "at-mp":
        return (lambda: inputs.at_like(rng, [ack, multi, valid[0]])), _at_rcv(multi)
    return (lambda: inputs.frame_like(rng, [ack, *valid])), ack


def run_host(name: str, seconds: float, limit: int, seed: int, tick: Callable[[int], None]) -> dict:
    rng = random.Random(seed)
    gen, call, valid = host_target(name, rng)
    counts, valid_ns, unexpected, examples = 0, [], 0, []
    slowest: list[tuple[int, bytes]] = []  # the SLOWEST slowest inputs, re-timed at the end
    deadline = time.monotonic() + seconds
    while (not limit or counts < limit) and time.monotonic() < deadline:
        for _ in range(VALID_EVERY):
            data = gen()
            t0 = time.perf_counter_ns()
            try:
                call(data)
            except Exception as exc:  # the point of the run: report, never stop
                unexpected += 1
                if len(examples) < 5:
                    examples.append([type(exc).__name__, str(exc)[:120], data.hex()])
            dt = time.perf_counter_ns() - t0
            if len(slowest) < SLOWEST or dt > slowest[0][0]:
                slowest = sorted([*slowest, (dt, data)], key=lambda x: x[0])[-SLOWEST:]
            counts += 1
        t0 = time.perf_counter_ns()
        call(valid)
        valid_ns.append(time.perf_counter_ns() - t0)
        tick(counts)
    median = statistics.median(valid_ns)
    retimed, size = max((_retime(call, data), len(data)) for _, data in slowest)
    return {"target": name, "inputs": counts, "unexpected": unexpected, "examples": examples,
            "worst_us": slowest[-1][0] / 1e3, "retimed_worst_us": retimed / 1e3, "worst_input_bytes": size,
            "valid_median_us": median / 1e3, "valid_bytes": len(valid), "worst_ratio": retimed / median}


def _retime(call: Callable[[bytes], None], data: bytes) -> int:
    """The fastest of 5 runs of one input: its own cost, without a collector pause or a
    preempted time slice that may have made it look slow the first time."""
    best = None
    for _ in range(5):
        t0 = time.perf_counter_ns()
        try:
            call(data)
        except Exception:
            pass
        dt = time.perf_counter_ns() - t0
        best = dt if best is None else min(best, dt)
    return best


def run_mp(name: str, seconds: float, limit: int, seed: int, tick: Callable[[int], None]) -> dict:
    rng = random.Random(seed)
    gen, valid = mp_input(name, rng)
    target = Path(__file__).resolve().parent / "mp_target.py"
    proc = micropython.popen([str(target), name[:-3]], heap="2M", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    err: list[bytes] = []
    threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True).start()
    counts = 0
    deadline = time.monotonic() + seconds
    try:
        while (not limit or counts < limit) and time.monotonic() < deadline:
            batch = [b"\x00" + struct.pack("<I", len(d)) + d for d in (gen() for _ in range(VALID_EVERY))]
            batch.append(b"\x01" + struct.pack("<I", len(valid)) + valid)
            proc.stdin.write(b"".join(batch))
            counts += VALID_EVERY
            tick(counts)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    out = proc.stdout.read().decode()
    if proc.wait() != 0 or not out.strip():
        raise RuntimeError(f"micropython fuzz target {name} failed: {(b''.join(err)).decode(errors='replace')[-500:]}")
    r = json.loads(out.strip().splitlines()[-1])
    median = max(r["valid_median_us"], 1)
    return {"target": name, "inputs": r["inputs"], "unexpected": r["unexpected"], "examples": r["examples"],
            "worst_us": float(r["worst_us"]), "retimed_worst_us": float(r["retimed_worst_us"]),
            "worst_input_bytes": r["worst_input_bytes"], "valid_median_us": float(r["valid_median_us"]),
            "valid_bytes": len(valid), "worst_ratio": r["retimed_worst_us"] / median}


def fuzz(name: str, seconds: float, limit: int, seed: int, tick: Callable[[int], None] = lambda n: None) -> dict:
    """Run one target; its report as a dict (see the module's docstring)."""
    runner = run_mp if name in MP_TARGETS else run_host
    return runner(name, seconds, limit, seed, tick)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    names = TARGETS if args.target == "all" else (args.target,)
    reports = []
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.completed:>10,.0f} inputs"),
                  TimeElapsedColumn(), console=console, transient=not console.is_terminal) as progress:
        for name in names:
            task = progress.add_task(name, total=args.inputs or None)
            reports.append(fuzz(name, args.seconds, args.inputs, args.seed,
                                lambda n, t=task: progress.update(t, completed=n)))
    table = Table(title=f"qis fuzz (seed {args.seed})")
    for col in ("target", "inputs", "unexpected", "worst seen", "worst re-timed (bytes)", "valid median (bytes)",
                "ratio"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for r in reports:
        table.add_row(r["target"], f"{r['inputs']:,}", str(r["unexpected"]), f"{r['worst_us']:.0f} us",
                      f"{r['retimed_worst_us']:.0f} us ({r['worst_input_bytes']})",
                      f"{r['valid_median_us']:.1f} us ({r['valid_bytes']})", f"{r['worst_ratio']:.1f}x")
    console.print(table)
    for r in reports:
        for kind, msg, data in r["examples"]:
            console.print(f"[red]{r['target']}: {kind}: {msg}\n  input {data[:200]}")
    if args.json:
        for r in reports:
            print(json.dumps(r))
    return 1 if any(r["unexpected"] for r in reports) else 0
