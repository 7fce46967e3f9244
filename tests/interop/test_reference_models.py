"""The committed ECG5000 reference models: contract, architecture, and their metrics.

onnxruntime is the oracle for inference; a numpy forward pass written here is the oracle
for the float graphs' architecture. Metrics are recomputed on the 4,500 test beats and
must equal models/<name>/metrics.json exactly.
"""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from qis.tools.train import graphs
from qis.tools.train.evaluate import file_info
from qis.tools.datasets.ecg5000 import load_ecg5000
from qis.tools.sim.micropython import models_dir

MODELS = models_dir()
ARCHS = ("ecg_mlp", "ecg_cnn", "ecg_dscnn")
INPUT_DIMS = {"ecg_mlp": [140], "ecg_cnn": [1, 140], "ecg_dscnn": [1, 140]}
FLOAT_OPS = {
    "ecg_mlp": {"Gemm", "Relu", "Softmax"},
    "ecg_cnn": {"Conv", "Relu", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm", "Softmax"},
    "ecg_dscnn": {"Conv", "Relu", "AveragePool", "GlobalAveragePool", "Flatten", "MatMul", "Add", "Softmax"},
}
# Hand-counted: MLP 140*32 + 32*16 + 16*5; CNN conv1 70*8*5, conv2 35*16*8*5,
# conv3 17*16*16*3, fc1 16*16, fc2 16*5; DS-CNN conv1 70*8*5, dw1 70*8*5, pw1 70*16*8,
# dw2 35*16*5, pw2 35*16*16, fc1 16*16, fc2 16*5.
MACS = {"ecg_mlp": 5072, "ecg_cnn": 2800 + 22400 + 13056 + 256 + 80,
        "ecg_dscnn": 2800 + 2800 + 8960 + 2800 + 8960 + 256 + 80}
PARAMS = {"ecg_mlp": 140 * 32 + 32 + 32 * 16 + 16 + 16 * 5 + 5,
          "ecg_cnn": 8 * 5 + 8 + 16 * 8 * 5 + 16 + 16 * 16 * 3 + 16 + 16 * 16 + 16 + 16 * 5 + 5,
          "ecg_dscnn": 8 * 5 + 8 + 8 * 5 + 8 + 16 * 8 + 16 + 16 * 5 + 16 + 16 * 16 + 16 + 16 * 16 + 16 + 16 * 5 + 5}
INT8_FILES = [("ecg_mlp", "model.int8.onnx"), ("ecg_cnn", "model.int8.onnx"), ("ecg_dscnn", "model.int8.onnx"),
              ("ecg_mlp", "model.qop.onnx")]


@pytest.fixture(scope="module")
def test_beats() -> tuple[np.ndarray, np.ndarray]:
    return load_ecg5000("test")


def _shaped(arch: str, x: np.ndarray) -> np.ndarray:
    return x.reshape([len(x)] + INPUT_DIMS[arch])


def _metrics(arch: str) -> dict:
    return json.loads((MODELS / arch / "metrics.json").read_text())


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _producer(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _check_io(model: onnx.ModelProto, arch: str) -> None:
    assert [o.domain for o in model.opset_import if o.domain in ("", "ai.onnx")] == [""]
    assert [o.version for o in model.opset_import if o.domain == ""] == [13]
    (inp,) = model.graph.input
    assert inp.name == "x" and inp.type.tensor_type.elem_type == TensorProto.FLOAT
    dims = _dims(inp)
    assert isinstance(dims[0], str) and dims[1:] == INPUT_DIMS[arch]  # N is symbolic
    outs = {o.name: o for o in model.graph.output}
    assert list(outs) == ["scores", "embedding"]
    for name, width in (("scores", 5), ("embedding", 16)):
        assert outs[name].type.tensor_type.elem_type == TensorProto.FLOAT
        assert _dims(outs[name])[1:] == [width]
    assert _producer(model)["scores"].op_type == "Softmax"


@pytest.mark.parametrize("arch", ARCHS)
def test_float_model_contract(arch: str) -> None:
    model = onnx.load(str(MODELS / arch / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    _check_io(model, arch)
    assert {n.op_type for n in model.graph.node} == FLOAT_OPS[arch]
    assert all(n.domain == "" for n in model.graph.node)
    assert _producer(model)["embedding"].op_type == "Relu"
    assert graphs.count_macs(model) == MACS[arch]
    assert graphs.count_params(model) == PARAMS[arch] == _metrics(arch)["params"]
    assert _metrics(arch)["macs"] == MACS[arch]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, groups: int = 1) -> np.ndarray:
    n, cin, length = x.shape
    cout, cig, k = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    out_len = (length + 2 * pad - k) // stride + 1
    cols = np.stack([xp[:, :, i * stride:i * stride + k] for i in range(out_len)], axis=1)
    cog = cout // groups
    parts = [np.einsum("nlck,ock->nol", cols[:, :, g * cig:(g + 1) * cig], w[g * cog:(g + 1) * cog])
             for g in range(groups)]
    return np.concatenate(parts, axis=1) + b[None, :, None]


def _reference_forward(arch: str, w: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    dense = lambda v, name: v @ w[name + ".weight"].T + w[name + ".bias"]  # noqa: E731
    if arch == "ecg_mlp":
        emb = relu(dense(relu(dense(x, "fc1")), "fc2"))
        logits = dense(emb, "fc3")
    elif arch == "ecg_dscnn":
        h = x
        for name, stride, pad, groups in (("conv1", 2, 2, 1), ("dw1", 1, 2, 8), ("pw1", 1, 0, 1), ("dw2", 1, 2, 16),
                                          ("pw2", 1, 0, 1)):
            h = relu(_conv1d(h, w[name + ".weight"], w[name + ".bias"], stride, pad, groups))
            if name == "pw1":
                h = h.reshape(h.shape[0], h.shape[1], -1, 2).mean(axis=3)
        matmul_add = lambda v, name: v @ w[name + ".weight"] + w[name + ".bias"]  # noqa: E731 - [in, out]
        emb = relu(matmul_add(h.mean(axis=2), "fc1"))
        logits = matmul_add(emb, "fc2")
    else:
        h = x
        for name, stride, pad, pool in (("conv1", 2, 2, True), ("conv2", 1, 2, True), ("conv3", 1, 1, False)):
            h = relu(_conv1d(h, w[name + ".weight"], w[name + ".bias"], stride, pad))
            if pool:
                half = h.shape[2] // 2
                h = h[:, :, :2 * half].reshape(h.shape[0], h.shape[1], half, 2).max(axis=3)
        emb = relu(dense(h.mean(axis=2), "fc1"))
        logits = dense(emb, "fc2")
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), emb


@pytest.mark.parametrize("arch", ARCHS)
def test_float_model_matches_numpy_reference(arch: str, test_beats: tuple) -> None:
    path = MODELS / arch / "model.onnx"
    x = _shaped(arch, test_beats[0][:256]).astype(np.float64)
    want_scores, want_emb = _reference_forward(arch, _weights(onnx.load(str(path))), x)
    scores, emb = _session(path).run(["scores", "embedding"], {"x": x.astype(np.float32)})
    assert np.abs(scores - want_scores).max() < 1e-5
    assert np.abs(emb - want_emb).max() < 1e-4


def _is_int8_dq(model: onnx.ModelProto, tensor: str) -> bool:
    """Is `tensor` the output of a DequantizeLinear of int8 data?"""
    node = _producer(model).get(tensor)
    if node is None or node.op_type != "DequantizeLinear":
        return False
    inits = {t.name: t for t in model.graph.initializer}
    zero_point = inits[node.input[2]]
    return zero_point.data_type == TensorProto.INT8


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_qdq_contract(arch: str) -> None:
    model = onnx.load(str(MODELS / arch / "model.int8.onnx"))
    onnx.checker.check_model(model, full_check=True)
    _check_io(model, arch)
    assert all(n.domain == "" for n in model.graph.node)
    assert len(model.opset_import) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = _producer(model)
    # Both outputs leave an int8 tensor through DequantizeLinear (scores via Softmax).
    assert _is_int8_dq(model, "embedding")
    assert _is_int8_dq(model, producer["scores"].input[0])
    # Every Conv/Gemm/MatMul reads int8 activations and per-channel int8 weights; Conv and
    # Gemm have an int32 bias, a MatMul's bias is an Add of an int8 constant.
    compute = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(compute) == {"ecg_mlp": 3, "ecg_cnn": 5, "ecg_dscnn": 7}[arch]
    for node in compute:
        assert _is_int8_dq(model, node.input[0]), node.name
        assert _is_int8_dq(model, node.input[1]), node.name
        wdq = producer[node.input[1]]
        weight, scale = inits[wdq.input[0]], inits[wdq.input[1]]
        channels = weight.shape[1] if node.op_type == "MatMul" else weight.shape[0]
        assert weight.dtype == np.int8 and scale.shape == (channels,)
        if node.op_type == "MatMul":
            continue
        bias_dq = producer[node.input[2]]
        assert bias_dq.op_type == "DequantizeLinear" and inits[bias_dq.input[0]].dtype == np.int32
    for node in (n for n in model.graph.node if n.op_type == "Add"):
        assert any(_is_int8_dq(model, i) and producer[i].input[0] in inits for i in node.input), node.name


def test_qoperator_mlp_contract() -> None:
    model = onnx.load(str(MODELS / "ecg_mlp" / "model.qop.onnx"))
    onnx.checker.check_model(model)
    _check_io(model, "ecg_mlp")
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    assert ops.count(("com.microsoft", "QGemm")) == 3
    assert {op for op in ops if op[1] not in ("QGemm",)} == {
        ("", "QuantizeLinear"), ("", "DequantizeLinear"), ("", "Softmax")}
    assert _is_int8_dq(model, "embedding")
    assert _is_int8_dq(model, _producer(model)["scores"].input[0])


@pytest.mark.parametrize("arch,name", INT8_FILES)
def test_int8_model_runs(arch: str, name: str, test_beats: tuple) -> None:
    x = _shaped(arch, test_beats[0][:3])
    scores, emb = _session(MODELS / arch / name).run(["scores", "embedding"], {"x": x})
    assert scores.shape == (3, 5) and scores.dtype == np.float32
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert emb.min() >= 0  # ReLU, folded into the int8 range


def _recompute(arch: str, name: str, beats: tuple) -> dict:
    x, y = beats
    scores, emb = _session(MODELS / arch / name).run(["scores", "embedding"], {"x": _shaped(arch, x)})
    pred = scores.argmax(axis=1)
    confusion = np.zeros((5, 5), dtype=int)
    for t, p in zip(y, pred):
        confusion[t, p] += 1
    recall = np.diag(confusion) / confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.diag(confusion) / np.maximum(predicted, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return {"correct": int((pred == y).sum()), "confusion": confusion.tolist(),
            "macro_f1": float(f1.mean()), "pred": pred, "embedding": emb}


@pytest.mark.parametrize("arch", ARCHS)
def test_metrics_are_reproduced(arch: str, test_beats: tuple) -> None:
    recorded = _metrics(arch)
    for name, info in recorded["files"].items():
        assert file_info(MODELS / arch / name) == info, name
    kinds = {"float": "model.onnx", "int8": "model.int8.onnx", "qop": "model.qop.onnx"}
    got = {kind: _recompute(arch, file, test_beats) for kind, file in kinds.items()
           if file in recorded["files"]}
    assert set(got) == set(recorded["test"])
    for kind, result in got.items():
        want = recorded["test"][kind]
        assert want["n"] == 4500
        assert result["correct"] == want["correct"], kind
        assert want["accuracy"] == round(result["correct"] / 4500, 6)
        assert result["confusion"] == want["confusion"], kind
        assert result["macro_f1"] == pytest.approx(want["macro_f1"], abs=1e-6)
    float_acc = got["float"]["correct"] / 4500
    for kind in set(got) - {"float"}:
        assert abs(got[kind]["correct"] / 4500 - float_acc) <= 0.02, kind
        agreement = float((got[kind]["pred"] == got["float"]["pred"]).mean())
        assert agreement == pytest.approx(recorded["test"][kind]["agreement_with_float"], abs=1e-6)
        # The int8 embedding tracks the float one (what the fingerprints are made of).
        a, b = got[kind]["embedding"], got["float"]["embedding"]
        cos = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-9)
        assert np.percentile(cos, 1) > 0.999
