"""`qis model check MODEL.onnx --data X.npz --runtime {micropython,cpython} --json`.

Compiles MODEL.onnx, runs the edge runtime (qis.edge.model) on every input row of the
npz array `x` (float32 for a float-input model, else its 8-bit type), and compares it
with the reference: an onnxruntime InferenceSession on the same ONNX file with default
settings (CPU provider, default graph optimizations, which fuse QDQ patterns into
integer kernels). A model with a dynamic batch gets all rows in one run; a model with a
fixed batch B gets them B at a time.

Comparison is in the quantized domain. For an output made by DequantizeLinear, ORT's int8
is recovered exactly from its float: q = rint(f / scale) + zp. For an output behind a
float Softmax, the int8 logits feeding it are compared up to the common shift Softmax
removes (all the graph's output shows): log(p_i / p_max) / scale recovers them exactly
from ORT's probabilities (exposing them as an output would change how onnxruntime fuses
the layer before them). argmax_agreement compares the argmax of the logits,
argmax_agreement_scores the argmax of ORT's probabilities (ties: first index).
Both sides get the same 8-bit input: x is quantized on the host as ORT's QuantizeLinear
does (float32 x / scale, round half to even, saturate).
The last line printed is one JSON object: n, exact_fraction, max_lsb_diff,
argmax_agreement and per-output details.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx

from ..errors import ToolError
from . import compile as compile_model
from . import format as F
from .runtime import run_cpython, run_micropython


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
    raise ToolError("cannot find the int8 logits behind output %r" % out)


def _run_batched(session, feed_name: str, x: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """session outputs for all rows of x: in one run (dynamic batch) or `batch` rows at a time."""
    if batch is None:
        return session.run(None, {feed_name: x})
    if len(x) % batch:
        raise ToolError("the model has a fixed batch of %d; the data has %d rows, not a multiple" % (batch, len(x)))
    parts = [session.run(None, {feed_name: x[i:i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The input's fixed batch size, or None when the batch dimension is symbolic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else None


def _softmax_output(graph: onnx.GraphProto, out: str) -> bool:
    """Is graph output `out` made by a float Softmax (probabilities not quantized again)?"""
    node = _producer(graph, out)
    return node is not None and node.op_type == "Softmax"


def relative_logits(probs: np.ndarray, scale: float) -> np.ndarray:
    """The int8 logits behind float Softmax probabilities, relative to each row's largest:
    log(p_i / p_max) = scale * (q_i - q_max), exact to ~1e-6 LSB in float32."""
    p = probs.reshape(len(probs), -1).astype(np.float64)
    if (p <= 0).any():
        raise ToolError("a Softmax probability underflowed to 0: its logit cannot be recovered")
    top = p.argmax(axis=1)
    return np.rint((np.log(p) - np.log(p[np.arange(len(p)), top])[:, None]) / float(np.float32(scale))).astype(np.int64)


def ort_reference(model_path: str | Path, qm: F.QemModel, x: np.ndarray) -> dict:
    """ORT's outputs for the rows of x, by output name: {"q": 8-bit/int32 values}; for a
    Softmax output, the int8 logits behind it. A float Softmax's logits are recovered from
    its probabilities ("rel": relative to the largest, all the graph's output shows):
    exposing them as an output would change how onnxruntime fuses the layer before (it
    does). The logits of quantized probabilities (QLinearSoftmax, or a Softmax between
    DequantizeLinear and QuantizeLinear) are exposed from a second session: for such a
    graph the reference can differ from what onnxruntime computes without the exposure."""
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    batch = fixed_batch(model)
    feed = model.graph.input[0].name
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    res = dict(zip([o.name for o in sess.get_outputs()], _run_batched(sess, feed, x, batch)))
    extra = [(name, _logits_tensor(model.graph, name)) for name, _, flags in qm.outputs
             if flags & F.IOF_SOFTMAX and not _softmax_output(model.graph, name)]
    if extra:
        for _, tensor in extra:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
        sess2 = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        res.update(zip([o.name for o in sess2.get_outputs()], _run_batched(sess2, feed, x, batch)))
    ref: dict[str, dict] = {}
    logits = dict(extra)
    for name, tid, flags in qm.outputs:
        t = qm.tensors[tid]
        val = res[name]
        if flags & F.IOF_SOFTMAX:
            ref[name] = {"argmax": val.reshape(len(val), -1).argmax(axis=1)}
            if name in logits:
                ref[name]["q"] = res[logits[name]]
            else:
                ref[name]["rel"] = relative_logits(val, t.scale)
        elif val.dtype == np.float32:
            dt = {F.DT_INT8: np.int8, F.DT_UINT8: np.uint8}[t.dtype]
            ref[name] = {"q": (np.rint(val / np.float32(t.scale)).astype(np.int64) + t.zero_point).astype(dt)}
        else:
            ref[name] = {"q": val}
    return ref


def compare(qm: F.QemModel, ref: dict, got: dict[str, np.ndarray]) -> dict:
    """Exact fraction, max |LSB| difference and argmax agreement, overall and per output."""
    per = {}
    total = exact = 0
    max_diff = 0
    agree = []
    for name, _tid, flags in qm.outputs:
        g = got[name].astype(np.int64)
        g = g.reshape(len(g), -1)
        if "rel" in ref[name]:  # logits up to the shift Softmax removes
            r = ref[name]["rel"]
            g = g - g[np.arange(len(g)), r.argmax(axis=1)][:, None]
        else:
            r = ref[name]["q"].astype(np.int64).reshape(len(g), -1)
        d = np.abs(r - g)
        entry = {"elements": int(d.size), "exact_fraction": float((d == 0).mean()), "max_lsb_diff": int(d.max())}
        if flags & F.IOF_SOFTMAX:
            a = g.argmax(axis=1) == r.argmax(axis=1)
            entry["argmax_agreement"] = float(a.mean())
            # against ORT's probabilities: equal quantized top scores make argmax pick the first
            entry["argmax_agreement_scores"] = float((g.argmax(axis=1) == np.asarray(ref[name]["argmax"])).mean())
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
    """Compile, run both sides on the rows of x, compare."""
    qem, qm = compile_model(model_path)
    model = onnx.load(str(model_path))
    name, tid = qm.inputs[0]
    t = qm.tensors[tid]
    dt = np.int8 if t.dtype == F.DT_INT8 else np.uint8
    x = np.asarray(x)
    if model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
        feed = x.astype(np.float32)
        xq = quantize_like_ort(feed, t.scale, t.zero_point, dt)
    else:
        feed = xq = x.astype(dt)
    if xq.size % t.nelem:
        raise ToolError("the data holds %d values, not a whole number of %d-value inputs" % (xq.size, t.nelem))
    ref = ort_reference(model_path, qm, feed)
    rows = xq.reshape(-1, t.nelem)  # one run() per input of the compiled model (batch 1)
    got = run_micropython(qem, rows, heap, progress) if runtime == "micropython" else run_cpython(qem, rows)
    result = compare(qm, ref, got)
    result.update(runtime=runtime, model=str(model_path), reference="onnxruntime InferenceSession, default options, CPU")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="quantized ONNX model")
    parser.add_argument("--data", required=True, help="npz file with array x (a batch of inputs)")
    parser.add_argument("--runtime", choices=["micropython", "cpython"], default="micropython")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N rows")
    parser.add_argument("--heap", default="256K", help="MicroPython heap size")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")


def run(args: argparse.Namespace) -> int:
    """CLI entry: per-output results, then the JSON object as the last line."""
    try:
        x = np.load(args.data)["x"]
    except (OSError, ValueError, KeyError) as exc:
        raise ToolError("cannot read array x from %s: %s" % (args.data, exc)) from None
    if args.limit:
        x = x[: args.limit]
    res = check(args.model, x, args.runtime, progress=True, heap=args.heap)
    if not args.json:
        for name, e in res["outputs"].items():
            print("%-12s exact %.5f  max diff %d LSB%s" % (
                name, e["exact_fraction"], e["max_lsb_diff"],
                "  argmax %.5f" % e["argmax_agreement"] if "argmax_agreement" in e else ""))
    print(json.dumps(res))
    return 0
