"""The ONNX -> .qem compiler: the ONNX backend node tests, refusals with true messages,
the issue's three cases (fixed-batch check, MatMul + bias Add, AveragePool rounding), the
file format, requantization and the memory plan. Random-graph conformance is in
test_qem_conformance.py.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import qem_graphs
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

from qis.tools.cli.main import main as qis_main
from qis.tools.qem import CompileError, requant_params
from qis.tools.qem import compile as compile_bytes
from qis.tools.qem import format as F
from qis.tools.qem.check import check
from qis.tools.qem.runtime import run_cpython

OPSET = [oh.make_opsetid("", 13), oh.make_opsetid("com.microsoft", 1)]


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    g = oh.make_graph(nodes, "g", inputs, outputs, inits)
    m = oh.make_model(g, opset_imports=OPSET)
    m.ir_version = 8
    return m


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


def test_unsupported_attribute_is_refused(tmp_path):
    m = onnx.load(qem_graphs.qlinearconv(np.random.default_rng(0), tmp_path).path)
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


def _qlinearmatmul(seed: int, folder) -> onnx.ModelProto:
    return onnx.load(qem_graphs.qlinearmatmul(np.random.default_rng(seed), folder).path)


def test_header_sections_and_crc(tmp_path):
    import binascii
    import struct

    data, qm = compile_bytes(_qlinearmatmul(3, tmp_path))
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
    _, qm = compile_bytes(qem_graphs.quantize_static_chain(np.random.default_rng(5), tmp_path).path)
    made = {op.out for op in qm.ops if not qm.tensors[op.out].flags & F.TF_INT32} | {qm.inputs[0][1]}
    assert qm.arena_bytes < sum(qm.tensors[t].nelem for t in made)


def test_requant_schemes_against_onnxruntime(tmp_path):
    """float32-product emulation (ours) matches ORT at least as well as double or TFLite-style Q31."""
    import onnxruntime as ort

    r = np.random.default_rng(1)
    mism = {"fl32": 0, "double": 0, "q31": 0}
    total = 0
    for seed in range(20):
        m = _qlinearmatmul(100 + seed, tmp_path)
        dt = np.int8 if m.graph.input[0].type.tensor_type.elem_type == TP.INT8 else np.uint8
        x = qem_graphs._q(r, dt, (256, m.graph.input[0].type.tensor_type.shape.dim[1].dim_value))
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 256
        want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x})[0].astype(np.int64)
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


# --- issue 9, items 1 to 3 ---------------------------------------------------------


def _avgpool_after_conv_relu(folder, per_channel: bool) -> str:
    """Conv2d + Relu, then AveragePool 2x2 stride 2, quantized by onnxruntime (issue 9, item 3)."""
    r = np.random.default_rng(0)
    inits = [nh.from_array((r.standard_normal((6, 2, 3, 3)) * 0.4).astype(np.float32), "w"),
             nh.from_array((r.standard_normal(6) * 0.1).astype(np.float32), "b")]
    nodes = [oh.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             oh.make_node("Relu", ["c"], ["r"], name="relu"),
             oh.make_node("AveragePool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    m = _model(nodes, [oh.make_tensor_value_info("x", TP.FLOAT, ["N", 2, 8, 8])],
               [oh.make_tensor_value_info("y", TP.FLOAT, ["N", 6, 4, 4])], inits)
    m.opset_import.pop()
    onnx.save(m, str(folder / "f.onnx"))
    calib = r.standard_normal((50, 2, 8, 8)).astype(np.float32)
    return qem_graphs.quantize_qdq(str(folder / "f.onnx"), str(folder / "q.onnx"), calib, per_channel)


@pytest.mark.parametrize("per_channel", [False, True])
def test_averagepool_after_conv_relu_is_bit_exact(tmp_path, per_channel):
    path = _avgpool_after_conv_relu(tmp_path, per_channel)
    x = np.random.default_rng(5).standard_normal((200, 2, 8, 8)).astype(np.float32)
    res = check(path, x, "cpython")
    assert res["n"] == 200 and res["exact_fraction"] == 1.0 and res["max_lsb_diff"] == 0, res


def test_matmul_then_bias_add_compiles_and_is_bit_exact(tmp_path):
    """MatMul followed by an Add of a dequantized bias (an unfused Linear) (issue 9, item 2)."""
    case = qem_graphs.qdq_matmul_add(np.random.default_rng(3), tmp_path)
    ops = {n.op_type for n in onnx.load(case.path).graph.node}
    assert {"MatMul", "Add"} <= ops and "Gemm" not in ops
    res = check(case.path, case.feed, "cpython")
    assert res["exact_fraction"] == 1.0 and res["max_lsb_diff"] == 0, res


def test_a_refused_add_says_what_its_input_is():
    """A refusal names what the input really is (it used to claim it was not a DequantizeLinear)."""
    inits = [nh.from_array(np.array(0.1, np.float32), "s"), nh.from_array(np.array(0, np.int8), "z"),
             nh.from_array(np.ones(4, np.float32), "c")]
    nodes = [oh.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), oh.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             oh.make_node("Add", ["d", "c"], ["a"], name="add"), oh.make_node("QuantizeLinear", ["a", "s", "z"], ["y"])]
    m = _model(nodes, [oh.make_tensor_value_info("x", TP.FLOAT, [1, 4])], [oh.make_empty_tensor_value_info("y")], inits)
    with pytest.raises(CompileError, match=r"add \(Add\): input 'c' must be a dequantized activation .*; it is a constant"):
        compile_bytes(m)


def test_model_check_takes_many_rows_for_a_fixed_batch_model(tmp_path, capsys):
    """qis model check on a batch-1 model with 300 rows (issue 9, item 1: a shape error in ORT)."""
    case = qem_graphs.qdq_gemm(np.random.default_rng(8), tmp_path)
    m = onnx.load(case.path)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # fixed batch of 1
    onnx.save(m, str(tmp_path / "fixed.onnx"))
    x = np.random.default_rng(1).standard_normal((300,) + case.feed.shape[1:]).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    assert qis_main(["model", "check", str(tmp_path / "fixed.onnx"), "--data", str(tmp_path / "x.npz"),
                     "--runtime", "cpython", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 300 and res["exact_fraction"] == 1.0


def test_a_refusal_reaches_the_cli_as_one_line(tmp_path, capsys):
    m = _one_node("Tanh", ["x"], in_type=TP.FLOAT)
    onnx.save(m, str(tmp_path / "m.onnx"))
    assert qis_main(["model", "compile", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["qis model compile: the_node (Tanh): unsupported op type"]


def test_a_truncated_onnx_file_is_refused(tmp_path):
    (tmp_path / "t.onnx").write_bytes(open(_avgpool_after_conv_relu(tmp_path, False), "rb").read()[:200])
    with pytest.raises(CompileError, match="cannot read ONNX model"):
        compile_bytes(str(tmp_path / "t.onnx"))
