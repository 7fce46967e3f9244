"""`qis model check MODEL.onnx --data X.npz --runtime {micropython,cpython} --json`.

Compiles MODEL.onnx, runs the edge runtime (qis.edge.model) on every input row of the
npz array `x` (float32, a batch), and compares it with the reference: an onnxruntime
InferenceSession on the same ONNX file with default settings (CPU provider, default graph
optimizations, which fuse QDQ patterns into integer kernels).

Comparison is in the quantized domain. For an output made by DequantizeLinear, ORT's int8
is recovered exactly from its float: q = rint(f / scale) + zp. For an output behind a
Softmax, the int8 logits feeding it are compared (exposed from a second session of the
same graph with that tensor added as an output); argmax_agreement compares the argmax of
the logits, argmax_agreement_scores the argmax of ORT's probabilities (ties: first index).
Both sides get the same int8 input: x is quantized on the host as ORT's QuantizeLinear
does (float32 x / scale, round half to even, saturate).
The last line printed is one JSON object: n, exact_fraction, max_lsb_diff,
argmax_agreement and per-output details.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from . import qem_format as F
from .qem_compile import CompileError, compile_bytes
from .sim.micropython import binary as micropython_binary
from .sim.micropython import lib_dir

ROOT = lib_dir()

_MP_DRIVER = r"""
import sys
sys.path.insert(0, %(root)r)
from edge.model import Model
m = Model(%(qem)r)
names = m.output_names()
n_in = m.input_size()
buf = bytearray(n_in)
out = sys.stdout
with open(%(inp)r, "rb") as f:
    k = 0
    while f.readinto(buf) == n_in:
        m.set_input_q(buf)
        m.run()
        parts = []
        for name in names:
            parts.append(" ".join(str(v) for v in m.output(name)))
        out.write("|".join(parts))
        out.write("\n")
        k += 1
"""


def quantize_like_ort(x: np.ndarray, scale: float, zp: int, dtype: np.dtype) -> np.ndarray:
    """QuantizeLinear as onnxruntime computes it: float32 x / scale, rint, + zp, saturate."""
    info = np.iinfo(dtype)
    q = np.rint(x.astype(np.float32) / np.float32(scale)).astype(np.int64) + zp
    return np.clip(q, info.min, info.max).astype(dtype)


def _producer(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    for node in graph.node:
        if name in node.output:
            return node
    return None


def _logits_tensor(graph: onnx.GraphProto, out: str) -> str:
    """Name of the int8 tensor whose Softmax (or QLinearSoftmax) makes graph output `out`."""
    node = _producer(graph, out)
    while node is not None and node.op_type in ("DequantizeLinear", "QuantizeLinear"):
        node = _producer(graph, node.input[0])
    if node is not None and node.op_type == "QLinearSoftmax":
        return node.input[0]
    if node is not None and node.op_type == "Softmax":
        src = _producer(graph, node.input[0])
        if src is not None and src.op_type == "DequantizeLinear":
            return src.input[0]
    raise CompileError("cannot find the int8 logits behind output %r" % out)


def ort_reference(model_path: str | Path, qm: F.QemModel, feeds: dict[str, np.ndarray]) -> dict:
    """ORT's outputs, by output name: int8/uint8/int32 arrays, and argmax for Softmax outputs."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    res = dict(zip(names, sess.run(None, feeds)))
    ref: dict[str, dict] = {}
    extra = []
    model = onnx.load(str(model_path))
    for name, tid, flags in qm.outputs:
        t = qm.tensors[tid]
        val = res[name]
        if flags & F.IOF_SOFTMAX:
            extra.append((name, _logits_tensor(model.graph, name)))
            ref[name] = {"argmax": val.reshape(val.shape[0], -1).argmax(axis=1) if val.ndim > 1 else val.argmax()}
        elif val.dtype == np.float32:
            dt = {F.DT_INT8: np.int8, F.DT_UINT8: np.uint8}[t.dtype]
            q = np.rint(val / np.float32(t.scale)).astype(np.int64) + t.zero_point
            ref[name] = {"q": q.astype(dt)}
        else:
            ref[name] = {"q": val}
    if extra:
        have = {o.name for o in model.graph.output}
        for _, tensor in extra:
            if tensor not in have:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
        sess2 = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names2 = [o.name for o in sess2.get_outputs()]
        res2 = dict(zip(names2, sess2.run(None, feeds)))
        for name, tensor in extra:
            ref[name]["q"] = res2[tensor]
    return ref


def run_cpython(qem: bytes, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The edge runtime under this CPython, one run() per row of pre-quantized input."""
    from qis.edge.model import Model

    m = Model(qem)
    outs: dict[str, list] = {n: [] for n in m.output_names()}
    for row in rows:
        m.set_input_q(row.reshape(-1).view(np.uint8).tobytes())
        m.run()
        for n in outs:
            outs[n].append(np.array(m.output(n)))
    return {n: np.stack(v) for n, v in outs.items()}


def run_micropython(qem: bytes, rows: np.ndarray, heap: str = "256K", progress: bool = False) -> dict[str, np.ndarray]:
    """The edge runtime under the MicroPython unix port: inputs from a file, outputs streamed back."""
    with tempfile.TemporaryDirectory() as tmp:
        qp, ip, dp = Path(tmp, "m.qem"), Path(tmp, "x.bin"), Path(tmp, "driver.py")
        qp.write_bytes(qem)
        ip.write_bytes(np.ascontiguousarray(rows).view(np.uint8).tobytes())
        dp.write_text(_MP_DRIVER % {"root": str(ROOT), "qem": str(qp), "inp": str(ip)})
        proc = subprocess.Popen([micropython_binary(), "-X", "heapsize=" + heap, str(dp)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if progress and len(lines) % 500 == 0:
                print("micropython: %d/%d" % (len(lines), len(rows)), file=sys.stderr)
        err = proc.stderr.read() if proc.stderr else ""
        if proc.wait() != 0 or len(lines) != len(rows):
            raise RuntimeError("micropython driver failed (%d/%d rows): %s" % (len(lines), len(rows), err))
    from qis.edge.model import Model

    names = Model(qem).output_names()
    outs: dict[str, list] = {n: [] for n in names}
    for line in lines:
        for n, part in zip(names, line.rstrip("\n").split("|")):
            outs[n].append(np.array([int(v) for v in part.split()], np.int64))
    return {n: np.stack(v) for n, v in outs.items()}


_MP_MEMORY = r"""
import sys, gc, micropython
sys.path.insert(0, %(root)r)
from edge.model import Model


def main():
    gc.collect()
    base = gc.mem_alloc()
    m = Model(%(qem)r)
    x = bytearray(m.input_size())
    with open(%(inp)r, "rb") as f:
        f.readinto(x)
    m.set_input_q(x)
    gc.collect()
    loaded = gc.mem_alloc()
    m.run()  # warm-up: the first call after a collection
    gc.collect()
    before = gc.mem_alloc()
    peak = micropython.mem_peak()
    m.run()
    after = gc.mem_alloc()
    peak = micropython.mem_peak() - peak
    print("%%d %%d %%d %%d" %% (loaded - base, after - before, peak, gc.mem_free()))
    print(" ".join(str(v) for v in m.output(m.output_names()[0])))


main()
"""


def micropython_memory(qem: bytes, row: np.ndarray, heap: str = "64K") -> dict:
    """One inference under `micropython -X heapsize=HEAP`: model bytes after load, heap growth
    and micropython.mem_peak() delta of one run(), free heap, and the first output."""
    with tempfile.TemporaryDirectory() as tmp:
        qp, ip, dp = Path(tmp, "m.qem"), Path(tmp, "x.bin"), Path(tmp, "mem.py")
        qp.write_bytes(qem)
        ip.write_bytes(np.ascontiguousarray(row).view(np.uint8).tobytes())
        dp.write_text(_MP_MEMORY % {"root": str(ROOT), "qem": str(qp), "inp": str(ip)})
        proc = subprocess.run([micropython_binary(), "-X", "heapsize=" + heap, str(dp)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("micropython (heap %s) failed: %s%s" % (heap, proc.stdout, proc.stderr))
    head, out = proc.stdout.strip().splitlines()[-2:]
    loaded, grew, peak, free = (int(v) for v in head.split())
    return {"heap": heap, "model_bytes_after_load": loaded, "run_heap_growth": grew,
            "run_mem_peak_delta": peak, "free_after_run": free, "output": [int(v) for v in out.split()]}


def compare(qm: F.QemModel, ref: dict, got: dict[str, np.ndarray]) -> dict:
    """Exact fraction, max |LSB| difference and argmax agreement, overall and per output."""
    per = {}
    total = exact = 0
    max_diff = 0
    agree = []
    for name, _tid, flags in qm.outputs:
        r = ref[name]["q"].astype(np.int64).reshape(len(got[name]), -1)
        g = got[name].astype(np.int64).reshape(len(r), -1)
        d = np.abs(r - g)
        entry = {"elements": int(d.size), "exact_fraction": float((d == 0).mean()), "max_lsb_diff": int(d.max())}
        if flags & F.IOF_SOFTMAX:
            a = g.argmax(axis=1) == r.argmax(axis=1)
            entry["argmax_agreement"] = float(a.mean())
            # against ORT's probabilities: equal quantized top scores make argmax pick the first
            entry["argmax_agreement_scores"] = float((g.argmax(axis=1) == np.asarray(ref[name]["argmax"]).reshape(-1)).mean())
            entry["logits"] = True
            agree.append(a)
        per[name] = entry
        total += d.size
        exact += int((d == 0).sum())
        max_diff = max(max_diff, int(d.max()))
    n = len(next(iter(got.values())))
    return {"n": n, "exact_fraction": exact / total, "max_lsb_diff": max_diff,
            "argmax_agreement": float(np.concatenate(agree).mean()) if agree else None, "outputs": per}


def check(model_path: str | Path, x: np.ndarray, runtime: str = "cpython", progress: bool = False,
          heap: str = "256K") -> dict:
    """Compile, run both sides on batch x, compare. The batch is fed to ORT in one run."""
    qem, qm = compile_bytes(model_path)
    model = onnx.load(str(model_path))
    name, tid = qm.inputs[0]
    t = qm.tensors[tid]
    dt = np.int8 if t.dtype == F.DT_INT8 else np.uint8
    feed_dtype = model.graph.input[0].type.tensor_type.elem_type
    x = np.asarray(x)
    xq = quantize_like_ort(x, t.scale, t.zero_point, dt) if feed_dtype == onnx.TensorProto.FLOAT else x.astype(dt)
    ref = ort_reference(model_path, qm, {name: x.astype(np.float32) if feed_dtype == onnx.TensorProto.FLOAT else xq})
    rows = xq.reshape(-1, t.nelem)  # one run() per compiled input (batch 1)
    got = run_micropython(qem, rows, heap, progress) if runtime == "micropython" else run_cpython(qem, rows)
    result = compare(qm, ref, got)
    result.update(runtime=runtime, model=str(model_path), reference="onnxruntime InferenceSession, default options, CPU")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="quantized ONNX model")
    parser.add_argument("--data", required=True, help="npz file with array x (float32, a batch)")
    parser.add_argument("--runtime", choices=["micropython", "cpython"], default="micropython")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N rows")
    parser.add_argument("--heap", default="256K", help="MicroPython heap size")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")


def run(args: argparse.Namespace) -> int:
    """CLI entry: print per-output results, then the JSON object as the last line."""
    x = np.load(args.data)["x"]
    if args.limit:
        x = x[: args.limit]
    try:
        res = check(args.model, x, args.runtime, progress=True, heap=args.heap)
    except CompileError as exc:
        print("error: %s" % exc)
        return 1
    if not args.json:
        for name, e in res["outputs"].items():
            print("%-12s exact %.5f  max diff %d LSB%s" % (
                name, e["exact_fraction"], e["max_lsb_diff"],
                "  argmax %.5f" % e["argmax_agreement"] if "argmax_agreement" in e else ""))
    print(json.dumps(res))
    return 0
