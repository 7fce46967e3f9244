"""Regenerate the small compiled test models and their expected outputs (CPython, host).

    .venv/bin/python tests/vectors/models/make_models.py

Writes tiny_cnn.qem (QDQ int8 1-D CNN made by onnxruntime's quantize_static: Conv, Relu,
MaxPool, GlobalAveragePool, Gemm, Softmax; outputs "scores" and "embedding"),
tiny_qop.qem (uint8 QOperator 2-D graph: grouped dilated padded QLinearConv, then a
1x1 QLinearConv) and models.json: for each model, input qparams, output qparams and cases
{input_q (hex of the int8/uint8 input), input_f (floats, QDQ model only), outputs
{name: [ints]}, argmax}. Expected outputs are the compiled model's under CPython, each
case checked equal to onnxruntime's (default session, quantized domain; Softmax logits up
to the shift Softmax removes, all the graph's output shows) before it is written;
tests/interop/test_qem_compile.py checks this file is current.
"""
from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

HERE = Path(__file__).resolve().parent


def tiny_cnn(tmp: Path) -> tuple[str, np.ndarray]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    r = np.random.default_rng(2024)
    inits = []

    def p(name, shape, s=0.4):
        inits.append(nh.from_array((r.standard_normal(shape) * s).astype(np.float32), name))
        return name

    nodes = [oh.make_node("Conv", ["x", p("w1", (4, 1, 5)), p("b1", (4,))], ["c1"], pads=[2, 2], strides=[2]),
             oh.make_node("Relu", ["c1"], ["r1"]),
             oh.make_node("MaxPool", ["r1"], ["m1"], kernel_shape=[2], strides=[2]),
             oh.make_node("Conv", ["m1", p("w2", (6, 4, 3)), p("b2", (6,))], ["c2"], pads=[1, 1], dilations=[1]),
             oh.make_node("Relu", ["c2"], ["r2"]),
             oh.make_node("GlobalAveragePool", ["r2"], ["g"]),
             oh.make_node("Flatten", ["g"], ["f"]),
             oh.make_node("Gemm", ["f", p("w3", (8, 6)), p("b3", (8,))], ["e"], transB=1),
             oh.make_node("Relu", ["e"], ["embedding"]),
             oh.make_node("Gemm", ["embedding", p("w4", (3, 8)), p("b4", (3,))], ["logits"], transB=1),
             oh.make_node("Softmax", ["logits"], ["scores"], axis=1, name="softmax")]
    g = oh.make_graph(nodes, "tiny_cnn", [oh.make_tensor_value_info("x", TP.FLOAT, ["N", 1, 24])],
                      [oh.make_tensor_value_info("scores", TP.FLOAT, ["N", 3]),
                       oh.make_tensor_value_info("embedding", TP.FLOAT, ["N", 8])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)])
    m.ir_version = 8
    fp, qp = tmp / "tiny_cnn.f.onnx", tmp / "tiny_cnn.onnx"
    onnx.save(m, str(fp))
    xs = r.standard_normal((40, 1, 24)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": xs[i : i + 1]} for i in range(32)])

        def get_next(self):
            return next(self.it, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(fp), str(qp), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_exclude=["softmax"])  # float probabilities, as the reference models
    return str(qp), xs[32:]


def tiny_qop(tmp: Path) -> tuple[str, np.ndarray]:
    r = np.random.default_rng(7)
    u8 = np.uint8

    def c(name, val):
        return nh.from_array(np.asarray(val), name)

    inits = [c("xs", np.float32(0.03)), c("xz", u8(120)),
             c("w1", r.integers(0, 256, (4, 1, 3, 3)).astype(u8)), c("w1s", np.array([0.004, 0.006, 0.005, 0.003], np.float32)),
             c("w1z", np.array([128, 120, 131, 127], u8)), c("y1s", np.float32(0.05)), c("y1z", u8(128)),
             c("b1", np.array([100, -200, 50, 0], np.int32)),
             c("w2", r.integers(0, 256, (4, 4, 1, 1)).astype(u8)), c("w2s", np.float32(0.007)), c("w2z", u8(125)),
             c("y2s", np.float32(0.02)), c("y2z", u8(130))]
    nodes = [oh.make_node("QLinearConv", ["x", "xs", "xz", "w1", "w1s", "w1z", "y1s", "y1z", "b1"], ["y1"],
                          group=2, pads=[2, 2, 2, 2], dilations=[2, 2], strides=[1, 1], name="conv_grouped"),
             oh.make_node("QLinearConv", ["y1", "y1s", "y1z", "w2", "w2s", "w2z", "y2s", "y2z"], ["y"],
                          name="conv_1x1")]
    g = oh.make_graph(nodes, "tiny_qop", [oh.make_tensor_value_info("x", TP.UINT8, [1, 2, 5, 6])],
                      [oh.make_tensor_value_info("y", TP.UINT8, [1, 4, 5, 6])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 13), oh.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    path = tmp / "tiny_qop.onnx"
    onnx.save(m, str(path))
    return str(path), r.integers(0, 256, (4, 1, 2, 5, 6)).astype(u8)


def build(out_dir: Path = HERE) -> dict:
    """Compile both models into out_dir and return the models.json content."""
    sys.path.insert(0, str(HERE.parents[2]))
    from qis.tools.qem import compile as compile_bytes
    from qis.tools.qem import format as F
    from qis.tools.qem.check import compare, ort_reference, quantize_like_ort
    from qis.tools.qem.runtime import run_cpython

    doc = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, maker in (("tiny_cnn", tiny_cnn), ("tiny_qop", tiny_qop)):
            path, xs = maker(Path(tmp))
            data, qm = compile_bytes(path)
            (out_dir / (name + ".qem")).write_bytes(data)
            t = qm.tensors[qm.inputs[0][1]]
            dt = np.int8 if t.dtype == F.DT_INT8 else np.uint8
            cases = []
            for x in xs:
                is_float = x.dtype == np.float32
                xq = quantize_like_ort(x, t.scale, t.zero_point, dt) if is_float else x
                ref = ort_reference(path, qm, x[None] if is_float else x)
                got = run_cpython(data, xq.astype(dt).reshape(1, -1))
                if compare(qm, ref, got)["exact_fraction"] != 1.0:
                    raise SystemExit("%s: the compiled model disagrees with onnxruntime: %s" % (name, compare(qm, ref, got)))
                case = {"input_q": xq.astype(dt).view(np.uint8).tobytes().hex(),
                        "outputs": {o: [int(v) for v in got[o].reshape(-1)] for o, _, _ in qm.outputs}}
                if is_float:
                    case["input_f"] = [float(v) for v in x.reshape(-1)]
                cases.append(case)
            doc[name] = {"file": name + ".qem", "input_qparams": [t.scale, t.zero_point],
                         "output_qparams": {o: [qm.tensors[i].scale, qm.tensors[i].zero_point] for o, i, _ in qm.outputs},
                         "softmax": [o for o, _, f in qm.outputs if f & F.IOF_SOFTMAX], "cases": cases}
    (out_dir / "models.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


if __name__ == "__main__":
    build()
    print("wrote", HERE)
