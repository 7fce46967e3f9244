"""`qis bench model`: int8 inference speed of the reference models under the MicroPython unix
port, against the interpreter's ceiling measured in the same process.

Subject: Model.run() with the viper kernels. Baseline: kernels.dot, a bare viper loop doing
the same signed int8 work per multiply-accumulate as the kernels (stored bytes, minus the
+128 bias, multiplied, accumulated), one tap per step. Each round times the subject and then
the baseline for about --round-ms each, so both see the same machine load; the ratio of
the round is the subject's MACs/s over the baseline's. The kernels' dot loops take 8 taps
per step and fold zero points out of the loop, so they can beat that plain loop; the same
signed loop unrolled 8 times is timed too and reported as a second ratio. --rounds rounds (at least 5) give the median, min and
max of the ratio. With --bytecode, the same model with its kernels as plain bytecode (no
@micropython.viper) is timed in the same rounds, for viper's speed-up.

A benchmark, not a test: progress on stderr, a table, and one JSON object as the last line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..errors import ToolError, UsageError
from ..qem import compile as compile_model
from ..sim import micropython

MODELS = ("ecg_cnn", "ecg_mlp", "ecg_dscnn")
HEAP = "512K"
DOT_LEN = 1024

_DRIVER = r"""
import json, time, micropython
from edge.model import Model
from edge import kernels
%(bytecode_import)s


@micropython.viper
def dot_unrolled(a: ptr8, b: ptr8, n: int, reps: int) -> int:
    # the same signed work as kernels.dot, 8 taps per step (as the fc and conv dots run)
    s = 0
    for r in range(reps):
        s = 0
        i = 0
        while i < n:
            s += (int(a[i]) - 128) * (int(b[i]) - 128) + (int(a[i + 1]) - 128) * (int(b[i + 1]) - 128) + \
                (int(a[i + 2]) - 128) * (int(b[i + 2]) - 128) + (int(a[i + 3]) - 128) * (int(b[i + 3]) - 128) + \
                (int(a[i + 4]) - 128) * (int(b[i + 4]) - 128) + (int(a[i + 5]) - 128) * (int(b[i + 5]) - 128) + \
                (int(a[i + 6]) - 128) * (int(b[i + 6]) - 128) + (int(a[i + 7]) - 128) * (int(b[i + 7]) - 128)
            i += 8
    return s

ROUND_US = %(round_us)d


def timed(fn, arg):
    # calls fn(arg) for about ROUND_US: (calls, microseconds)
    n = 0
    t0 = time.ticks_us()
    while True:
        fn(arg)
        n += 1
        us = time.ticks_diff(time.ticks_us(), t0)
        if us >= ROUND_US:
            return n, us


def run_model(m):
    m.run()


def main():
    models = {"viper": Model(%(qem)r)}
    %(bytecode_model)s
    x = bytearray(models["viper"].input_size())
    for i in range(len(x)):
        x[i] = (i * 37) & 0xFF
    for m in models.values():
        m.set_input_q(x)
        m.run()
    a = bytearray(%(dot_len)d)
    b = bytearray(%(dot_len)d)
    for i in range(len(a)):
        a[i] = (i * 11) & 0xFF
        b[i] = (i * 7 + 3) & 0xFF
    dot = kernels.dot

    def ceiling(reps):
        dot(a, b, len(a), reps)

    def unrolled(reps):
        dot_unrolled(a, b, len(a), reps)

    for r in range(%(rounds)d):
        row = {"round": r}
        for name, m in models.items():
            row[name] = timed(run_model, m)
        row["ceiling"] = timed(ceiling, 8)
        row["unrolled"] = timed(unrolled, 8)
        print(json.dumps(row))


main()
"""


def _edge_copy(dest: Path, package: str) -> None:
    """The edge package as plain bytecode (its @micropython.viper lines removed) under `package`."""
    src = micropython.lib_dir() / "edge"
    for path in src.rglob("*.py"):
        out = dest / package / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() != "@micropython.viper"]
        out.write_text("\n".join(lines) + "\n")


def measure(model: Path, rounds: int, round_ms: int, bytecode: bool, progress: Console) -> dict:
    """Interleaved rounds of one model under MicroPython: per-round rates and ratio stats."""
    qem, qm = compile_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        qp = Path(tmp, "m.qem")
        qp.write_bytes(qem)
        extra = ()
        if bytecode:
            _edge_copy(Path(tmp), "edge_bytecode")
            extra = (Path(tmp),)
        driver = Path(tmp, "bench.py")
        driver.write_text(_DRIVER % {
            "qem": str(qp), "round_us": round_ms * 1000, "rounds": rounds, "dot_len": DOT_LEN,
            "bytecode_import": "from edge_bytecode.model import Model as BytecodeModel" if bytecode else "",
            "bytecode_model": 'models["bytecode"] = BytecodeModel(%r)' % str(qp) if bytecode else "pass"})
        proc = micropython.popen([str(driver)], heap=HEAP, extra_path=extra, stdout=-1, stderr=-1, text=True)
        rows = []
        for line in proc.stdout:
            rows.append(json.loads(line))
            progress.print("  %s round %d/%d" % (model.parent.name, len(rows), rounds))
        err = proc.stderr.read()
        if proc.wait() != 0 or len(rows) != rounds:
            raise ToolError("the benchmark under MicroPython failed: %s" % err.strip())
    macs = qm.macs
    per_round = []
    for row in rows:
        runs, us = row["viper"]
        reps, dus = row["ceiling"]
        ureps, uus = row["unrolled"]
        entry = {"inferences_per_s": runs / us * 1e6, "macs_per_s": runs * macs / us * 1e6,
                 "ceiling_macs_per_s": reps * 8 * DOT_LEN / dus * 1e6,
                 "unrolled_macs_per_s": ureps * 8 * DOT_LEN / uus * 1e6}
        entry["ratio"] = entry["macs_per_s"] / entry["ceiling_macs_per_s"]
        entry["ratio_unrolled"] = entry["macs_per_s"] / entry["unrolled_macs_per_s"]
        if bytecode:
            bruns, bus = row["bytecode"]
            entry["bytecode_inferences_per_s"] = bruns / bus * 1e6
            entry["viper_speedup"] = entry["inferences_per_s"] / entry["bytecode_inferences_per_s"]
        per_round.append(entry)

    def stats(key: str) -> dict:
        values = [r[key] for r in per_round]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    out = {"model": model.parent.name, "macs_per_inference": macs, "rounds": rounds,
           "ratio": stats("ratio"), "ratio_unrolled": stats("ratio_unrolled"),
           "inferences_per_s": stats("inferences_per_s"), "macs_per_s": stats("macs_per_s"),
           "ceiling_macs_per_s": stats("ceiling_macs_per_s"), "unrolled_macs_per_s": stats("unrolled_macs_per_s")}
    if bytecode:
        out["viper_speedup"] = stats("viper_speedup")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", type=Path,
                        help="quantized ONNX model (repeatable; default: the reference models)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds, at least 5 (default 7)")
    parser.add_argument("--round-ms", type=int, default=400, help="time per subject or baseline in a round")
    parser.add_argument("--bytecode", action="store_true", help="also time the kernels as plain bytecode")


def run(args: argparse.Namespace) -> int:
    if args.rounds < 5:
        raise UsageError("--rounds must be at least 5 (the median of 5 interleaved runs is the least we report)")
    paths = args.model or [micropython.models_dir() / m / "model.int8.onnx" for m in MODELS]
    progress = Console(stderr=True)
    results = [measure(p, args.rounds, args.round_ms, args.bytecode, progress) for p in paths]
    table = Table(title="int8 models under MicroPython: MACs/s against a signed int8 viper dot loop, "
                        "%d interleaved rounds" % args.rounds)
    for col in ("model", "MACs", "inferences/s (median)", "ratio median", "min", "max",
                "vs unrolled dot") + (("viper / bytecode",) if args.bytecode else ()):
        table.add_column(col, justify="right")
    for r in results:
        row = [r["model"], str(r["macs_per_inference"]), "%.0f" % r["inferences_per_s"]["median"],
               "%.2f" % r["ratio"]["median"], "%.2f" % r["ratio"]["min"], "%.2f" % r["ratio"]["max"],
               "%.2f" % r["ratio_unrolled"]["median"]]
        if args.bytecode:
            row.append("%.0fx" % r["viper_speedup"]["median"])
        table.add_row(*row)
    Console().print(table)
    print(json.dumps({"python": sys.version.split()[0], "heap": HEAP, "models": results}))
    return 0
