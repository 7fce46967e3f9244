"""`qis bench frames`: frames per second at both ends of the protocol, with baselines.

Device side, under the real MicroPython unix port (one process): encode_outcome + seal for
the compact and full profiles, next to what bounds them in the same run: the raw AES block
rate of cryptolib (ECB, one 16-byte block per call as the CBC-MAC needs, and in bulk) over
the blocks one frame's CCM takes, and cbor.dumps alone.

Gateway side, under CPython: decode+verify (gateway.verify.open_outcome), and
decode+verify+commit through GatewayCore into a real SQLite file (WAL, synchronous=FULL)
with a commit every 1 and every 64 frames, next to a bare SQLite insert+commit of the same
rows in the same batches without any verification.

A benchmark, not a test: it prints a table, progress on stderr, and one JSON object as
the last line of stdout. Every measurement runs at most --frames frames and stops early
after --seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qis.edge import frame
from qis.edge.ccm import CCM
from qis.gateway.core import GatewayCore
from qis.gateway.keys import DeviceKey
from qis.gateway.store import SCHEMA, OutcomeStore
from qis.gateway.verify import Outcome, open_outcome
from qis.tools.errors import UsageError
from qis.tools.sim import micropython

KEY = bytes(range(16))
KID = bytes.fromhex("a1b2c3d4")
BATCHES = (1, 64)
HEAP = "256K"  # a device-sized heap (an ESP32 has ~110 KB free); see docs/EVIDENCE.md
ROUNDS = 3  # CPU-bound measurements run this many rounds and keep the fastest (shared cores)
# Representative outcomes: (time, model, domain, label, confidence, fingerprint, top-k).
FIELDS = {
    "compact": (1764201600, 2, 1, 3, 201, bytes.fromhex("fcca438a"), []),
    "full": (1764201600, 3, 1, 2, 201, bytes.fromhex("fce2ca8a43fc8acf6061e08f4b91a7ca"),
             [[2, 201], [0, 40], [4, 14], [1, 0], [3, 0]]),
}


def ccm_blocks(plaintext_len: int) -> int:
    """AES block encryptions of one AES-CCM-16-64-128 frame with our 15-byte AAD field:
    B0 and one AAD block, one CBC-MAC block and one keystream block per 16 plaintext
    bytes, and A0 for the tag mask."""
    per = (plaintext_len + 15) // 16
    return 3 + 2 * per


_MP_BENCH = """
import gc, json, sys, time, cryptolib
from edge import cbor, frame
from edge.ccm import CCM
N = %(frames)d
ROUNDS = %(rounds)d
LIMIT = %(limit_us)d
KEY = %(key)r
KID = %(kid)r
ccm = CCM(KEY)
print(json.dumps({"version": sys.version}))

def run(name, fn):
    # ROUNDS rounds of at most N calls and LIMIT us each; the fastest round counts.
    best = None
    for r in range(ROUNDS):
        gc.collect()
        t0 = time.ticks_us()
        n = 0
        while n < N:
            fn(n)
            n += 1
            if time.ticks_diff(time.ticks_us(), t0) > LIMIT:
                break
        us = time.ticks_diff(time.ticks_us(), t0)
        if best is None or n * best[1] > best[0] * us:
            best = (n, us)
    print(json.dumps({"name": name, "n": best[0], "us": best[1]}))

for pname, f in %(fields)r:
    prof = frame.profile(pname)
    items = [frame.VERSION, frame.TYPE_OUTCOME, f[0], f[1], f[2], f[3], f[4], f[5]]
    if prof.topk_max:
        items += [f[6], {}]
    pt = frame.encode_outcome(prof, *f)
    run("cbor_dumps_" + pname, lambda n: cbor.dumps(items))
    run("encode_" + pname, lambda n: frame.encode_outcome(prof, *f))
    run("seal_" + pname, lambda n: frame.seal(ccm, KID, n, pt, frame.UPLINK_IV))
    run("encode_seal_" + pname, lambda n: frame.seal(ccm, KID, n, frame.encode_outcome(prof, *f), frame.UPLINK_IV))

aes = cryptolib.aes(KEY, 1)
blk = bytearray(16)
BLOCKS = %(blocks)d
bulk = bytearray(16 * BLOCKS)

def aes_calls(n):
    for i in range(BLOCKS):
        aes.encrypt(blk, blk)

run("aes_block_calls", aes_calls)
run("aes_bulk", lambda n: aes.encrypt(bulk, bulk))
"""


def micropython_rates(frames: int, seconds: float, progress: Console) -> tuple[str, dict[str, dict]]:
    """Run the device-side measurements in one MicroPython process: (version, {name: result})."""
    code = _MP_BENCH % {
        "frames": frames, "rounds": ROUNDS, "limit_us": int(seconds / ROUNDS * 1e6), "key": KEY, "kid": KID,
        "fields": [(p, FIELDS[p]) for p in ("compact", "full")], "blocks": ccm_blocks(frame.FULL.plaintext_len),
    }
    proc = micropython.popen(["-c", code], heap=HEAP, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    version, results = "", {}
    for line in proc.stdout:
        item = json.loads(line)
        if "version" in item:
            version = item["version"]
            continue
        results[item["name"]] = item
        progress.print(f"micropython {item['name']}: {item['n']} in {item['us'] / 1e6:.2f} s")
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        raise RuntimeError(f"micropython benchmark failed: {err.strip()}")
    return version, results


def _timed(frames: int, seconds: float, step: Callable[[int], int]) -> dict:
    """Call step(i) (returning how many frames it handled) until frames are done or time is up."""
    n = 0
    t0 = time.perf_counter()
    while n < frames:
        n += step(n)
        if time.perf_counter() - t0 > seconds:
            break
    return {"n": n, "us": int((time.perf_counter() - t0) * 1e6)}


def _best_of(frames: int, seconds: float, step: Callable[[int], int]) -> dict:
    """The fastest of ROUNDS runs of _timed, each with its share of the time."""
    runs = [_timed(frames, seconds / ROUNDS, step) for _ in range(ROUNDS)]
    return max(runs, key=_fps)


def _make_frames(prof: frame.Profile, count: int) -> list[bytes]:
    ccm = CCM(KEY)
    pt = frame.encode_outcome(prof, *FIELDS[prof.name])
    return [frame.seal(ccm, KID, i, pt, frame.UPLINK_IV) for i in range(count)]


def gateway_rates(frames: int, seconds: float, workdir: Path, progress: Console) -> dict[str, dict]:
    """decode+verify, decode+verify+commit, and the bare SQLite baseline, under CPython."""
    device = DeviceKey("bench", KID, KEY)
    registry = {KID: device}
    results: dict[str, dict] = {}
    sealed = {p: _make_frames(frame.profile(p), frames) for p in ("compact", "full")}
    for pname, batch in sealed.items():
        results["verify_" + pname] = _best_of(frames, seconds, lambda i: bool(open_outcome(batch[i], registry)))
        progress.print(f"gateway verify_{pname}: {results['verify_' + pname]['n']} frames")

    full = sealed["full"]
    for size in BATCHES:
        store = OutcomeStore(workdir / f"core-{size}.sqlite")
        core = GatewayCore(registry, store)

        def core_batch(i: int, size: int = size, core: GatewayCore = core) -> int:
            chunk = full[i:i + size]
            for f in chunk:
                core.receive("bench", f)
            if len(core.flush().acks) != len(chunk):
                raise RuntimeError("gateway did not acknowledge every benchmark frame")
            return len(chunk)

        name = f"commit_{size}"
        results[name] = _timed(frames, seconds, core_batch)
        if store.counts()["frames_stored"] != results[name]["n"]:
            raise RuntimeError("gateway stored a different number of frames than it was given")
        store.close()
        progress.print(f"gateway {name}: {results[name]['n']} frames")

        rows = [_row(open_outcome(f, registry), f) for f in full[:results[name]["n"]]]
        name = f"bare_{size}"
        results[name] = _bare_sqlite(workdir / f"bare-{size}.sqlite", rows, size, seconds)
        progress.print(f"gateway {name}: {results[name]['n']} rows")
    return results


def _row(o: Outcome, f: bytes) -> tuple:
    """The row OutcomeStore.add writes for outcome o, for the bare SQLite baseline."""
    return (o.device, o.counter, o.time, o.model, o.domain, o.label, o.confidence, o.fingerprint,
            json.dumps(o.topk, separators=(",", ":")), o.profile, f, "bench", time.time())


def _bare_sqlite(path: Path, rows: list[tuple], size: int, seconds: float) -> dict:
    """The same rows into the same schema and pragmas, committed in the same batches."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)

    def step(i: int) -> int:
        chunk = rows[i:i + size]
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO outcomes (device, counter, time, model, domain, label, confidence, fingerprint, topk,"
            " profile, frame, port, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", chunk)
        db.execute("COMMIT")
        return len(chunk)

    result = _timed(len(rows), seconds, step)
    db.close()
    return result


def machine() -> dict[str, str | int]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count() or 0, "cpu": cpu, "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version}


def _fps(r: dict) -> float:
    return r["n"] / (r["us"] / 1e6) if r["us"] else 0.0


def summarize(mp: dict[str, dict], gw: dict[str, dict]) -> tuple[list[tuple[str, str, float, str]], dict]:
    """Table rows (what, where, per second, ratio text) and the ratios, from raw results."""
    full_blocks = ccm_blocks(frame.FULL.plaintext_len)
    blocks = {"compact": ccm_blocks(frame.COMPACT.plaintext_len), "full": full_blocks}
    aes_calls = _fps(mp["aes_block_calls"]) * full_blocks  # blocks/s, one block per call
    aes_bulk = _fps(mp["aes_bulk"]) * full_blocks  # blocks/s, all of a frame's blocks in one call
    rows: list[tuple[str, str, float, str]] = [
        ("AES-128 block, 1 block/call", "micropython", aes_calls, "blocks/s (baseline)"),
        ("AES-128 block, bulk call", "micropython", aes_bulk, "blocks/s"),
    ]
    ratios: dict[str, float] = {}
    for p in ("compact", "full"):
        floor = aes_calls / blocks[p]
        seal, both = _fps(mp["seal_" + p]), _fps(mp["encode_seal_" + p])
        ratios[f"seal_{p}_vs_aes_floor"] = seal / floor
        ratios[f"encode_seal_{p}_vs_aes_floor"] = both / floor
        ratios[f"cbor_share_of_encode_seal_{p}"] = both / _fps(mp["cbor_dumps_" + p])
        rows += [
            (f"AES floor, {p} ({blocks[p]} blocks)", "micropython", floor, "frames/s (baseline)"),
            (f"cbor.dumps, {p}", "micropython", _fps(mp["cbor_dumps_" + p]), "items/s (baseline)"),
            (f"encode_outcome, {p}", "micropython", _fps(mp["encode_" + p]), ""),
            (f"seal, {p}", "micropython", seal, f"{seal / floor:.2f} x AES floor"),
            (f"encode+seal, {p}", "micropython", both, f"{both / floor:.2f} x AES floor"),
        ]
    for p in ("compact", "full"):
        rows.append((f"decode+verify, {p}", "gateway", _fps(gw["verify_" + p]), "frames/s"))
    verify_full = _fps(gw["verify_full"])
    for size in BATCHES:
        bare, core = _fps(gw[f"bare_{size}"]), _fps(gw[f"commit_{size}"])
        ratios[f"commit_{size}_vs_bare_sqlite"] = core / bare
        ratios[f"commit_{size}_vs_verify_full"] = core / verify_full
        rows += [
            (f"bare SQLite insert+commit, batch {size}", "gateway", bare, "rows/s (baseline)"),
            (f"decode+verify+commit, full, batch {size}", "gateway", core,
             f"{core / bare:.2f} x bare SQLite, {core / verify_full:.2f} x verify only"),
        ]
    return rows, ratios


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=20000, help="at most this many frames per measurement")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="time cap per measurement in seconds (CPU-bound ones: best of 3 rounds within it)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory for the SQLite files (its file system decides what fsync costs; default: a temp dir)")


def run(args: argparse.Namespace) -> int:
    if args.frames < 64 or args.seconds <= 0:
        raise UsageError("--frames must be >= 64 and --seconds > 0")
    progress = Console(stderr=True)
    mp_version, mp = micropython_rates(args.frames, args.seconds, progress)
    with tempfile.TemporaryDirectory(prefix="qis-bench-", dir=args.dir) as tmp:
        gw = gateway_rates(args.frames, args.seconds, Path(tmp), progress)
    rows, ratios = summarize(mp, gw)

    table = Table(title="qis bench frames")
    for col, justify in (("measurement", "left"), ("runs on", "left"), ("per second", "right"), ("ratio", "left")):
        table.add_column(col, justify=justify)
    for what, where, rate, note in rows:
        table.add_row(what, where, f"{rate:,.0f}", note)
    Console().print(table)

    info = dict(machine(), micropython=mp_version)
    raw = {k: dict(v, per_s=round(_fps(v), 1)) for k, v in {**{"mp_" + k: v for k, v in mp.items()},
                                                            **{"gw_" + k: v for k, v in gw.items()}}.items()}
    print(json.dumps({"machine": info, "frames": args.frames, "seconds": args.seconds, "results": raw,
                      "ratios": {k: round(v, 4) for k, v in ratios.items()}}))
    return 0
