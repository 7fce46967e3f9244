"""`qis bench frames`: frames per second at both ends of the protocol, each against the
baseline that bounds it, interleaved in the same run, several runs (tools/bench/runs.py).

Device side, under the real MicroPython unix port (one process, a device-sized heap):
  seal             vs  the CCM floor: exactly the cryptolib AES calls one seal makes (a
                       call per block for the CBC-MAC, B0, the AAD and A0; the CTR
                       keystream in bulk calls of up to 16 blocks), on preallocated buffers
  encode_outcome   vs  cbor.dumps of the same item (the encoder's own floor)
  encode+seal      vs  cbor.dumps + the CCM floor
Gateway side, under CPython:
  decode+verify    vs  AES-CCM decryption of the same ciphertext with `cryptography` alone
  verify+commit    vs  a bare SQLite insert+commit of the same rows, same schema and
                       pragmas, in the same batches (1 and 64 frames per commit)

A benchmark, not a test: progress on stderr, a table, and one JSON object as the last line
of stdout with every run's numbers.
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
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from rich.console import Console
from rich.table import Table

from qis.edge import frame
from qis.edge.ccm import CCM
from qis.gateway.core import GatewayCore
from qis.gateway.keys import DeviceKey
from qis.gateway.store import SCHEMA, OutcomeStore
from qis.gateway.verify import AAD, _nonce, open_outcome, parse_envelope

from ..errors import ToolError, UsageError
from ..sim import micropython
from .runs import Pair, interleaved, summary

KEY = bytes(range(16))
KID = bytes.fromhex("a1b2c3d4")
HEAP = "256K"  # a device-sized heap (an ESP32 has ~110 KB free); see docs/EVIDENCE.md
# Representative outcomes: (time, model, domain, label, confidence, fingerprint, top-k).
FIELDS = {
    "compact": (1764201600, 2, 1, 3, 201, bytes.fromhex("fcca438a"), []),
    "full": (1764201600, 3, 1, 2, 201, bytes.fromhex("fce2ca8a43fc8acf6061e08f4b91a7ca"),
             [[2, 201], [0, 40], [4, 14], [1, 0], [3, 0]]),
}

_MP_BENCH = """
import gc, json, sys, time, cryptolib
from edge import cbor, frame
from edge.ccm import CCM
RUNS = %(runs)d
TARGET_US = %(target_us)d
KEY = %(key)r
KID = %(kid)r
ccm = CCM(KEY)
aes = cryptolib.aes(KEY, 1)
blk = bytearray(16)
ks = bytearray(256)
ksv = memoryview(ks)
print(json.dumps({"version": sys.version}))


def ccm_floor(n):
    # The AES calls one CCM seal of n plaintext bytes makes (edge/ccm.py), nothing else:
    # B0, two AAD blocks, A0 and one per plaintext block singly; the keystream in bulk.
    for _ in range(4 + (n + 15) // 16):
        aes.encrypt(blk, blk)
    while n > 0:
        k = 256 if n > 256 else n
        v = ksv[: ((k + 15) >> 4) << 4]
        aes.encrypt(v, v)
        n -= k


def rate(fn, n):
    gc.collect()
    t0 = time.ticks_us()
    for i in range(n):
        fn(i)
    return n * 1e6 / max(1, time.ticks_diff(time.ticks_us(), t0))


def calibrate(fn):
    n = 1
    while True:
        t0 = time.ticks_us()
        for i in range(n):
            fn(i)
        dt = time.ticks_diff(time.ticks_us(), t0)
        if dt * 4 >= TARGET_US:
            return max(1, n * TARGET_US // max(dt, 1))
        n *= 4


pairs = []
for pname, f in %(fields)r:
    prof = frame.profile(pname)
    items = [frame.VERSION, frame.TYPE_OUTCOME, f[0], f[1], f[2], f[3], f[4], f[5]]
    if prof.topk_max:
        items += [f[6], {}]
    pt = frame.encode_outcome(prof, *f)
    n = prof.plaintext_len
    pairs.append(("seal_" + pname, lambda i, pt=pt: frame.seal(ccm, KID, i, pt, frame.UPLINK_IV),
                  lambda i, n=n: ccm_floor(n)))
    pairs.append(("encode_" + pname, lambda i, prof=prof, f=f: frame.encode_outcome(prof, *f),
                  lambda i, items=items: cbor.dumps(items)))
    pairs.append(("encode_seal_" + pname,
                  lambda i, prof=prof, f=f: frame.seal(ccm, KID, i, frame.encode_outcome(prof, *f), frame.UPLINK_IV),
                  lambda i, items=items, n=n: (cbor.dumps(items), ccm_floor(n))))
sizes = [(calibrate(s), calibrate(b)) for _, s, b in pairs]
for r in range(RUNS):
    for (name, s, b), (ns, nb) in zip(pairs, sizes):
        if r %% 2:
            rs = rate(s, ns)
            rb = rate(b, nb)
        else:
            rb = rate(b, nb)
            rs = rate(s, ns)
        print(json.dumps({"name": name, "run": r, "subject": rs, "baseline": rb}))
"""

DEVICE_LABELS = {  # pair -> (subject, baseline)
    "seal": ("seal", "CCM floor (the same AES calls)"),
    "encode": ("encode_outcome", "cbor.dumps of the same item"),
    "encode_seal": ("encode+seal", "cbor.dumps + CCM floor"),
}


def device_pairs(runs: int, target_s: float, progress: Console) -> tuple[str, dict[str, dict]]:
    """The device-side pairs in one MicroPython process: (version, {pair: results})."""
    code = _MP_BENCH % {"runs": runs, "target_us": int(target_s * 1e6), "key": KEY, "kid": KID,
                        "fields": [(p, FIELDS[p]) for p in ("compact", "full")]}
    proc = micropython.popen(["-c", code], heap=HEAP, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    version, raw = "", {}
    for line in proc.stdout:
        item = json.loads(line)
        if "version" in item:
            version = item["version"]
            continue
        raw.setdefault(item["name"], []).append((item["subject"], item["baseline"]))
        progress.print(f"micropython run {item['run'] + 1}/{runs} {item['name']}: "
                       f"{item['subject']:,.0f} vs {item['baseline']:,.0f} /s")
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        raise ToolError(f"micropython benchmark failed: {err.strip()}")
    results = {name: {"subject": summary([s for s, _ in v]), "baseline": summary([b for _, b in v]),
                      "ratio": summary([s / b for s, b in v]), "runs": v} for name, v in raw.items()}
    return version, results


class FrameMaker:
    """Distinct full frames, counter after counter, sealed with `cryptography` (a few us
    each). Both sides of the commit pairs make their frames with it, so that cost is
    common to subject and baseline, and every frame is new to the database."""

    def __init__(self) -> None:
        self._aead = AESCCM(KEY, tag_length=8)
        self._plaintext = bytes(frame.encode_outcome(frame.FULL, *FIELDS["full"]))
        self._head = bytes(frame.seal(CCM(KEY), KID, 0, self._plaintext, frame.UPLINK_IV))[:21]
        self.counter = 0

    def next(self) -> bytes:
        self.counter += 1
        piv = self.counter.to_bytes(4, "big")
        body = self._aead.encrypt(_nonce(piv, frame.UPLINK_IV), self._plaintext, AAD)
        return self._head[:14] + piv + self._head[18:] + body


def gateway_pairs(workdir: Path) -> list[Pair]:
    """decode+verify against the bare AEAD, and verify+commit against bare SQLite."""
    registry = {KID: DeviceKey("bench", KID, KEY)}
    sample = FrameMaker().next()
    outcome = open_outcome(sample, registry)
    envelope = parse_envelope(sample)
    aead = AESCCM(KEY, tag_length=8)
    nonce = _nonce(envelope.piv, frame.UPLINK_IV)
    pairs = [Pair("verify_full", lambda i: open_outcome(sample, registry),
                  lambda i: aead.decrypt(nonce, envelope.ciphertext, AAD),
                  "decode+verify (open_outcome)", "AES-CCM decrypt alone (cryptography)")]
    for batch in (1, 64):
        core = GatewayCore(registry, OutcomeStore(workdir / f"core-{batch}.sqlite"))
        bare = sqlite3.connect(workdir / f"bare-{batch}.sqlite", isolation_level=None)
        bare.execute("PRAGMA journal_mode=WAL")
        bare.execute("PRAGMA synchronous=FULL")
        bare.executescript(SCHEMA)
        pairs.append(Pair(f"commit_{batch}", _core_step(core, FrameMaker(), batch),
                          _bare_step(bare, FrameMaker(), outcome, batch),
                          f"verify+store+ACK, commit every {batch}", f"bare SQLite insert+commit every {batch}"))
    return pairs


def _core_step(core: GatewayCore, maker: FrameMaker, batch: int):
    """One new frame into the core; a commit after every batch-th."""
    def step(_: int) -> None:
        core.receive("bench", maker.next())
        if maker.counter % batch == 0 and len(core.flush().acks) != batch:
            raise ToolError("the gateway did not acknowledge every benchmark frame")
    return step


def _bare_step(db: sqlite3.Connection, maker: FrameMaker, o, batch: int):
    """The row OutcomeStore.add writes for each new frame, in the same batches."""
    def step(_: int) -> None:
        f = maker.next()
        if maker.counter % batch == 1 or batch == 1:
            db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO outcomes (device, counter, time, model, domain, label, confidence,"
                   " fingerprint, topk, profile, frame, port, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (o.device, maker.counter, o.time, o.model, o.domain, o.label, o.confidence, o.fingerprint,
                    json.dumps(o.topk, separators=(",", ":")), o.profile, f, "bench", time.time()))
        if maker.counter % batch == 0:
            db.execute("COMMIT")
    return step


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs of every pair (default 5)")
    parser.add_argument("--seconds", type=float, default=0.3, help="about this long per measurement (default 0.3)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory for the SQLite files (its file system decides what fsync costs; default: a temp dir)")


def run(args: argparse.Namespace) -> int:
    if args.runs < 5 or args.seconds <= 0:
        raise UsageError("--runs must be at least 5 (a median needs a spread) and --seconds > 0")
    progress = Console(stderr=True)
    version, device = device_pairs(args.runs, args.seconds, progress)
    with tempfile.TemporaryDirectory(prefix="qis-bench-", dir=args.dir) as tmp:
        pairs = gateway_pairs(Path(tmp))
        gateway = interleaved(pairs, args.runs, args.seconds, tick=progress.print)
    labels = {**{f"{k}_{p}": v for k, v in DEVICE_LABELS.items() for p in ("compact", "full")},
              **{p.name: (p.subject_label, p.baseline_label) for p in pairs}}
    table = Table(title=f"qis bench frames: {args.runs} interleaved runs, median [min-max]")
    for col in ("side", "pair", "subject /s", "baseline /s", "subject / baseline"):
        table.add_column(col, justify="left" if col in ("side", "pair") else "right")
    for where, results in (("device", device), ("gateway", gateway)):
        for name, r in results.items():
            table.add_row(where, name, _fmt(r["subject"], ",.0f"), _fmt(r["baseline"], ",.0f"),
                          _fmt(r["ratio"], ".3f"))
    console = Console()
    console.print(table)
    for name, (subject, baseline) in labels.items():
        console.print(f"  {name}: {subject} vs {baseline}", soft_wrap=True)
    print(json.dumps({"machine": {**machine(), "micropython": version, "heap": HEAP}, "runs": args.runs,
                      "device": device, "gateway": gateway}))
    return 0


def _fmt(s: dict[str, float], spec: str) -> str:
    return f"{s['median']:{spec}} [{s['min']:{spec}}-{s['max']:{spec}}]"
