"""The ONNX -> .qem compiler and the edge runtime against onnxruntime and the ONNX node tests.

Seeded random graphs (single QLinear/Integer ops with random geometry and quantization,
and QDQ chains made by onnxruntime's quantize_static from small random float graphs) run
under the edge runtime and under onnxruntime; outputs are compared in the quantized domain.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

from qis.tools.qem import CompileError, requant_params
from qis.tools.qem import compile as compile_bytes
from qis.tools.qem import format as F
from qis.tools.qem.check import check
from qis.tools.qem.runtime import run_cpython

OPSET = [oh.make_opsetid("", 13), oh.make_opsetid("com.microsoft", 1)]
NP = {np.int8: TP.INT8, np.uint8: TP.UINT8}


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    g = oh.make_graph(nodes, "g", inputs, outputs, inits)
    m = oh.make_model(g, opset_imports=OPSET)
    m.ir_version = 8
    return m


def _save(m: onnx.ModelProto, tmp_path, name: str) -> str:
    p = tmp_path / (name + ".onnx")
    onnx.save(m, str(p))
    return str(p)


def _rand_q(r, dt, shape):
    info = np.iinfo(dt)
    return r.integers(info.min, info.max + 1, size=shape).astype(dt)


# --- random single-op graphs -------------------------------------------------------


def qlinearconv_graph(r: np.random.Generator):
    """A QLinearConv with random 1-D/2-D geometry, groups, per-channel scales, dtypes."""
    nd = int(r.integers(1, 3))
    g = int(r.choice([1, 1, 2, 4]))
    cin = g * int(r.integers(1, 4))
    cout = g * int(r.integers(1, 4))
    k = [int(r.integers(1, 4)) for _ in range(nd)]
    dil = [int(r.integers(1, 3)) for _ in range(nd)]
    size = [int(r.integers(max(k[i] * dil[i], 3), 12)) for i in range(nd)]
    strides = [int(r.integers(1, 3)) for _ in range(nd)]
    xdt = np.int8 if r.random() < 0.6 else np.uint8
    wdt = np.int8 if xdt == np.int8 or r.random() < 0.5 else np.uint8
    attrs = dict(strides=strides, dilations=dil, group=g)
    if r.random() < 0.25:
        attrs["auto_pad"] = str(r.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
        if attrs["auto_pad"] != "VALID":  # onnxruntime: no dilation with SAME_*
            attrs["dilations"] = dil = [1] * nd
    else:
        attrs["pads"] = [int(r.integers(0, 3)) for _ in range(2 * nd)]
        attrs["pads"] = [min(p, k[i % nd] * dil[i % nd] - 1) for i, p in enumerate(attrs["pads"])]
    per_ch = r.random() < 0.7
    w = _rand_q(r, wdt, [cout, cin // g] + k)
    ws = (r.random(cout if per_ch else 1) * 0.02 + 0.002).astype(np.float32)
    wz = np.zeros(cout if per_ch else 1, wdt) if wdt == np.int8 else r.integers(100, 156, cout if per_ch else 1).astype(wdt)
    xs = np.float32(r.random() * 0.05 + 0.01)
    xz = _rand_q(r, xdt, ()) // 4
    ys = np.float32(r.random() * 0.05 + 0.02)
    yz = _rand_q(r, xdt, ()) // 2
    bias = r.integers(-3000, 3000, cout).astype(np.int32)
    inits = [nh.from_array(np.array(xs), "xs"), nh.from_array(np.array(xz, xdt), "xz"), nh.from_array(w, "w"),
             nh.from_array(ws, "ws"), nh.from_array(wz, "wz"), nh.from_array(np.array(ys), "ys"),
             nh.from_array(np.array(yz, xdt), "yz"), nh.from_array(bias, "b")]
    node = oh.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], name="qconv", **attrs)
    shape = [1, cin] + size
    m = _model([node], [oh.make_tensor_value_info("x", NP[xdt], shape)], [oh.make_empty_tensor_value_info("y")], inits)
    return m, _rand_q(r, xdt, [6] + shape[1:]).reshape(6, 1, *shape[1:])


def qlinearmatmul_graph(r: np.random.Generator):
    m_, k, n = int(r.integers(1, 5)), int(r.integers(1, 40)), int(r.integers(1, 20))
    xdt = np.int8 if r.random() < 0.6 else np.uint8
    wdt = np.int8 if xdt == np.int8 or r.random() < 0.5 else np.uint8
    per_ch = r.random() < 0.5
    b = _rand_q(r, wdt, (k, n))
    ws = (r.random(n if per_ch else 1) * 0.02 + 0.002).astype(np.float32)
    wz = np.zeros(n if per_ch else 1, wdt) if wdt == np.int8 else r.integers(100, 156, n if per_ch else 1).astype(wdt)
    inits = [nh.from_array(np.array(np.float32(r.random() * 0.05 + 0.01)), "xs"),
             nh.from_array(np.array(_rand_q(r, xdt, ()) // 4, xdt), "xz"), nh.from_array(b, "b"),
             nh.from_array(ws if per_ch else ws.reshape(()), "ws"), nh.from_array(wz if per_ch else wz.reshape(()), "wz"),
             nh.from_array(np.array(np.float32(r.random() * 0.2 + 0.05)), "ys"),
             nh.from_array(np.array(_rand_q(r, xdt, ()) // 2, xdt), "yz")]
    node = oh.make_node("QLinearMatMul", ["x", "xs", "xz", "b", "ws", "wz", "ys", "yz"], ["y"], name="qmm")
    m = _model([node], [oh.make_tensor_value_info("x", NP[xdt], [m_, k])], [oh.make_empty_tensor_value_info("y")], inits)
    return m, _rand_q(r, xdt, (1, m_, k))


def matmulinteger_graph(r: np.random.Generator):
    m_, k, n = int(r.integers(1, 5)), int(r.integers(1, 40)), int(r.integers(1, 20))
    xdt = np.uint8 if r.random() < 0.5 else np.int8
    b = _rand_q(r, np.int8, (k, n))
    inits = [nh.from_array(b, "b"), nh.from_array(np.array(_rand_q(r, xdt, ()) // 4, xdt), "xz")]
    node = oh.make_node("MatMulInteger", ["x", "b", "xz"], ["y"], name="mmi")
    m = _model([node], [oh.make_tensor_value_info("x", NP[xdt], [m_, k])], [oh.make_empty_tensor_value_info("y")], inits)
    return m, _rand_q(r, xdt, (1, m_, k))


def convinteger_graph(r: np.random.Generator):
    nd = int(r.integers(1, 3))
    cin, cout = int(r.integers(1, 4)), int(r.integers(1, 5))
    k = [int(r.integers(1, 4)) for _ in range(nd)]
    size = [int(r.integers(k[i] + 1, 10)) for i in range(nd)]
    w = _rand_q(r, np.uint8, [cout, cin] + k)
    inits = [nh.from_array(w, "w"), nh.from_array(np.array(int(r.integers(0, 255)), np.uint8), "xz")]
    attrs = dict(pads=[int(r.integers(0, k[i % nd])) for i in range(2 * nd)], strides=[int(r.integers(1, 3))] * nd)
    node = oh.make_node("ConvInteger", ["x", "w", "xz"], ["y"], name="convi", **attrs)
    shape = [1, cin] + size
    m = _model([node], [oh.make_tensor_value_info("x", TP.UINT8, shape)], [oh.make_empty_tensor_value_info("y")], inits)
    return m, _rand_q(r, np.uint8, [4] + shape[1:]).reshape(4, 1, *shape[1:])


def qdq_graph(r: np.random.Generator, tmp_path, idx: int):
    """A random float graph (Conv/Relu/Add/MaxPool/GAP/Gemm/MatMul/Clip) quantized by quantize_static."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    nd = int(r.integers(1, 3))
    c0, c1 = int(r.integers(1, 4)), int(r.integers(2, 9))
    size = [int(r.integers(8, 20)) for _ in range(nd)]
    k = [int(r.choice([1, 3, 5]))] * nd
    inits = []

    def p(name, shape, s=0.4):
        inits.append(nh.from_array((r.standard_normal(shape) * s).astype(np.float32), name))
        return name

    pad = [kk // 2 for kk in k] * 2
    nodes = [oh.make_node("Conv", ["x", p("w1", [c1, c0] + k), p("b1", [c1])], ["c1"], pads=pad, name="conv1"),
             oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             oh.make_node("Conv", ["r1", p("w2", [c1, c1 // (2 if c1 % 2 == 0 else 1)] + k), p("b2", [c1])], ["c2"],
                          pads=pad, group=2 if c1 % 2 == 0 else 1, name="conv2"),
             oh.make_node("Add", ["r1", "c2"], ["a"], name="add"),
             oh.make_node("Clip", ["a", "lo", "hi"], ["cl"], name="clip"),
             oh.make_node("MaxPool", ["cl"], ["mp"], kernel_shape=[2] * nd, strides=[2] * nd, name="pool"),
             oh.make_node("GlobalAveragePool", ["mp"], ["gap"], name="gap"),
             oh.make_node("Flatten", ["gap"], ["f"], name="flat"),
             oh.make_node("MatMul", ["f", p("w3", [c1, 12])], ["mm"], name="mm"),
             oh.make_node("Gemm", ["mm", p("w4", [7, 12]), p("b4", [7])], ["logits"], transB=1, name="gemm"),
             oh.make_node("Softmax", ["logits"], ["scores"], axis=1, name="softmax")]
    inits += [nh.from_array(np.array(-1.0, np.float32), "lo"), nh.from_array(np.array(2.5, np.float32), "hi")]
    shape = ["N", c0] + size
    m = _model(nodes, [oh.make_tensor_value_info("x", TP.FLOAT, shape)],
               [oh.make_tensor_value_info("scores", TP.FLOAT, ["N", 7]), oh.make_tensor_value_info("mm", TP.FLOAT, ["N", 12])],
               inits)
    m.opset_import.pop()
    fp = _save(m, tmp_path, "f%d" % idx)
    xs = r.standard_normal([64, c0] + size).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": xs[i : i + 1]} for i in range(48)])

        def get_next(self):
            return next(self.it, None)

    qp = str(tmp_path / ("q%d.onnx" % idx))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(fp, qp, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=bool(idx % 2))
    return qp, xs[48:].reshape(16, 1, c0, *size)


GENERATORS = {"qlinearconv": (qlinearconv_graph, 60), "qlinearmatmul": (qlinearmatmul_graph, 30),
              "matmulinteger": (matmulinteger_graph, 15), "convinteger": (convinteger_graph, 15)}


def _run_single(tmp_path, kind: str, seed: int, runtime: str = "cpython") -> dict:
    gen, _ = GENERATORS[kind]
    m, xs = gen(np.random.default_rng(seed))
    path = _save(m, tmp_path, "%s%d" % (kind, seed))
    # One ORT run per row: these graphs have a fixed batch of 1 (or M rows for matmuls).
    res = [check(path, x, runtime) for x in xs]
    return {"exact": sum(r["exact_fraction"] * r["n"] for r in res) / sum(r["n"] for r in res),
            "max": max(r["max_lsb_diff"] for r in res), "n": sum(r["n"] for r in res)}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_random_single_op_graphs_match_onnxruntime(tmp_path, kind):
    total = exact = 0.0
    worst = 0
    for seed in range(GENERATORS[kind][1]):
        r = _run_single(tmp_path, kind, seed)
        total += 1
        exact += r["exact"]
        worst = max(worst, r["max"])
    assert worst <= 1, worst
    assert exact / total >= 0.999, exact / total


def test_random_qdq_graphs_match_onnxruntime(tmp_path):
    r = np.random.default_rng(7)
    fractions, argmax = [], []
    for i in range(10):
        qp, xs = qdq_graph(r, tmp_path, i)
        xb = xs.reshape(len(xs), *xs.shape[2:])
        res = check(qp, xb, "cpython")
        assert res["max_lsb_diff"] <= 1, res
        fractions.append(res["exact_fraction"])
        argmax.append(res["argmax_agreement"])
    assert np.mean(fractions) >= 0.999, fractions
    assert min(argmax) == 1.0, argmax


def test_random_graphs_under_micropython(tmp_path):
    r = np.random.default_rng(11)
    qp, xs = qdq_graph(r, tmp_path, 100)
    xb = xs.reshape(len(xs), *xs.shape[2:])
    res = check(qp, xb, "micropython")
    assert res["n"] == 16 and res["exact_fraction"] >= 0.999 and res["max_lsb_diff"] <= 1, res
    for kind in ("qlinearconv", "qlinearmatmul", "matmulinteger", "convinteger"):
        for seed in range(100, 104):
            got = _run_single(tmp_path, kind, seed, "micropython")
            assert got["max"] <= 1 and got["exact"] >= 0.99, (kind, seed, got)


# --- the ONNX backend node tests ---------------------------------------------------

BACKEND_PREFIXES = ("test_qlinearmatmul", "test_qlinearconv", "test_matmulinteger", "test_convinteger")


def _backend_cases():
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    return [c for c in cases if c.name.startswith(BACKEND_PREFIXES)]


def _freeze(model: onnx.ModelProto, feeds: list[np.ndarray]) -> onnx.ModelProto:
    """Turn every graph input but the first into an initializer holding its test value."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inputs = list(m.graph.input)
    del m.graph.input[1:]
    for vi, val in zip(inputs[1:], feeds[1:]):
        m.graph.initializer.append(nh.from_array(np.asarray(val), vi.name))
    return m


@pytest.mark.parametrize("case", _backend_cases(), ids=lambda c: c.name)
def test_onnx_backend_node_cases_pass_exactly(case):
    for inputs, expected in case.data_sets:
        qem, qm = compile_bytes(_freeze(case.model, inputs))
        got = run_cpython(qem, np.asarray(inputs[0])[None])
        name = qm.outputs[0][0]
        np.testing.assert_array_equal(got[name].reshape(expected[0].shape), expected[0])


# --- refusals and format -----------------------------------------------------------


def _one_node(op, inputs, attrs=None, inits=(), in_type=TP.INT8, shape=(1, 4), domain=""):
    node = oh.make_node(op, inputs, ["y"], name="the_node", domain=domain, **(attrs or {}))
    return _model([node], [oh.make_tensor_value_info("x", in_type, list(shape))],
                  [oh.make_empty_tensor_value_info("y")], list(inits))


def test_unsupported_op_is_refused_naming_node_and_op():
    with pytest.raises(CompileError, match=r"the_node \(Tanh\): unsupported op type"):
        compile_bytes(_one_node("Tanh", ["x"], in_type=TP.FLOAT))


def test_unsupported_dtype_is_refused():
    with pytest.raises(CompileError, match=r"graph input 'x': dtype INT16"):
        compile_bytes(_one_node("Relu", ["x"], in_type=TP.INT16))
    qs = [nh.from_array(np.array(0.1, np.float32), "s"), nh.from_array(np.array(0, np.int16), "z")]
    with pytest.raises(CompileError, match=r"the_node \(QuantizeLinear\): output dtype int16"):
        compile_bytes(_one_node("QuantizeLinear", ["x", "s", "z"], inits=qs, in_type=TP.FLOAT))


def test_unsupported_attribute_is_refused():
    r = np.random.default_rng(0)
    m, _ = qlinearconv_graph(r)
    m.graph.node[0].attribute.append(oh.make_attribute("auto_pad", "BOGUS"))
    with pytest.raises(CompileError, match=r"qconv \(QLinearConv\): auto_pad=BOGUS"):
        compile_bytes(m)
    g = _one_node("MaxPool", ["x"], {"kernel_shape": [2], "ceil_mode": 1}, in_type=TP.INT8, shape=(1, 2, 8))
    with pytest.raises(CompileError, match=r"the_node \(MaxPool\): ceil_mode=1"):
        compile_bytes(g)
    inits = [nh.from_array(np.ones((4, 3), np.int8), "B"), nh.from_array(np.array(0.1, np.float32), "s"),
             nh.from_array(np.array(0, np.int8), "z")]
    g = _one_node("QGemm", ["x", "s", "z", "B", "s", "z", "", "s", "z"], {"alpha": 2.0}, inits, domain="com.microsoft")
    with pytest.raises(CompileError, match=r"the_node \(QGemm\): transA=1 or alpha"):
        compile_bytes(g)


def test_header_sections_and_crc():
    import binascii
    import struct

    m, _ = qlinearmatmul_graph(np.random.default_rng(3))
    data, qm = compile_bytes(m)
    magic, version, flags, size, arena, nt, nops, nin, nout, scratch, macs = F.HEADER.unpack_from(data, 0)
    assert (magic, version, flags, size) == (b"QEMF", F.VERSION, 0, len(data))
    assert (nt, nops, nin, nout) == (len(qm.tensors), len(qm.ops), 1, 1)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == binascii.crc32(data[:-4])
    assert arena == qm.arena_bytes and macs == qm.macs > 0


def test_requant_params_are_the_exact_float32_multiplier():
    for m in (np.float32(0.0123), np.float32(1.5), np.float32(3e-6)):
        big, shift = requant_params(m)
        assert 1 << 23 <= big < 1 << 24 and big * 2.0**-shift == float(m)


def test_arena_reuses_buffers_by_liveness(tmp_path):
    qp, _ = qdq_graph(np.random.default_rng(5), tmp_path, 0)
    _, qm = compile_bytes(qp)
    made = {op.out for op in qm.ops if not qm.tensors[op.out].flags & F.TF_INT32} | {qm.inputs[0][1]}
    assert qm.arena_bytes < sum(qm.tensors[t].nelem for t in made)


def test_requant_schemes_against_onnxruntime():
    """float32-product emulation (ours) matches ORT at least as well as double or TFLite-style Q31."""
    import onnxruntime as ort

    r = np.random.default_rng(1)
    mism = {"fl32": 0, "double": 0, "q31": 0}
    total = 0
    for _ in range(20):
        m, _x = qlinearmatmul_graph(r)
        x = _rand_q(r, np.int8 if m.graph.input[0].type.tensor_type.elem_type == TP.INT8 else np.uint8,
                    (256, m.graph.input[0].type.tensor_type.shape.dim[1].dim_value))
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 256
        want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0].astype(np.int64)
        init = {i.name: nh.to_array(i) for i in m.graph.initializer}
        acc = (x.astype(np.int64) - int(init["xz"])) @ (init["b"].astype(np.int64) - init["wz"].astype(np.int64))
        mult = (np.float32(init["xs"]) * init["ws"].astype(np.float32)) / np.float32(init["ys"])
        info = np.iinfo(init["yz"].dtype)
        zp = int(init["yz"])

        def sat(v):
            return np.clip(v + zp, info.min, info.max)

        got = {"fl32": sat(np.rint(acc.astype(np.float32) * mult.astype(np.float32)).astype(np.int64)),
               "double": sat(np.rint(acc * mult.astype(np.float64)).astype(np.int64))}
        # TFLite: Q31 multiplier, rounding doubling high mul, rounding (half away) right shift.
        mant, exp = np.frexp(mult.astype(np.float64))
        q31 = np.round(mant * 2.0**31).astype(np.int64)
        prod = acc * q31
        hi = (prod + (1 << 30)) >> 31
        sh = -exp
        rnd = np.where(hi >= 0, (hi + (1 << (sh - 1))) >> sh, -((-hi + (1 << (sh - 1))) >> sh))
        got["q31"] = sat(rnd)
        total += want.size
        for k in mism:
            mism[k] += int((got[k] != want).sum())
    print("requant mismatches vs ORT over %d values: %s" % (total, mism))
    assert mism["fl32"] <= mism["double"] and mism["fl32"] <= mism["q31"]
    assert mism["fl32"] == 0


def test_stored_vector_models_are_current(tmp_path):
    """tests/vectors/models/* are what make_models.py builds with this compiler and ORT."""
    import importlib.util
    from pathlib import Path

    here = Path(__file__).resolve().parents[1] / "vectors" / "models"
    spec = importlib.util.spec_from_file_location("make_models", here / "make_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(tmp_path)
    for name in ("tiny_cnn.qem", "tiny_qop.qem", "models.json"):
        assert (tmp_path / name).read_bytes() == (here / name).read_bytes(), name
