"""The torch-free half of the reference models: ONNX graphs, int8 quantization, evaluation.

tools/train.py trains the weights (PyTorch, optional) and hands them here as numpy arrays.
This module builds the float ONNX graphs with onnx.helper (opset 13, default domain only,
input "x", outputs "scores" = Softmax probabilities [N,5] and "embedding" [N,16]),
quantizes them with onnxruntime's static quantizer (QDQ int8, per-channel weights, MinMax
calibration on training beats) and evaluates any of them with onnxruntime. Tests use the
evaluation functions to recompute the committed metrics without torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
NUM_CLASSES = 5
EMBEDDING = 16
BEAT_LENGTH = 140

#: layer name -> (weight, bias) as numpy float32, in the layout ONNX wants:
#: dense [out, in] (Gemm transB=1), conv [out_ch, in_ch, k].
Weights = dict[str, tuple[np.ndarray, np.ndarray]]

MLP_LAYERS = (("fc1", 140, 32), ("fc2", 32, 16), ("fc3", 16, 5))
#: conv layers: (name, in_ch, out_ch, kernel, stride, pad); each followed by ReLU; the first
#: two also by MaxPool k=2.
CNN_CONVS = (("conv1", 1, 8, 5, 2, 2), ("conv2", 8, 16, 5, 1, 2), ("conv3", 16, 16, 3, 1, 1))
CNN_DENSE = (("fc1", 16, 16), ("fc2", 16, 5))


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def _dense(nodes: list, inits: list, name: str, src: str, dst: str, weights: Weights) -> None:
    w, b = weights[name]
    inits += [_init(name + ".weight", w), _init(name + ".bias", b)]
    nodes.append(helper.make_node("Gemm", [src, name + ".weight", name + ".bias"], [dst],
                                  name=name, transB=1))


def _head(nodes: list, inits: list, src: str, weights: Weights, fc_embed: str, fc_out: str) -> None:
    """Dense -> ReLU (= "embedding") -> Dense -> Softmax (= "scores")."""
    _dense(nodes, inits, fc_embed, src, fc_embed + ".out", weights)
    nodes.append(helper.make_node("Relu", [fc_embed + ".out"], ["embedding"], name=fc_embed + ".relu"))
    _dense(nodes, inits, fc_out, "embedding", "logits", weights)
    nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], name="softmax", axis=1))


def _model(name: str, nodes: list, inits: list, input_shape: Sequence[int | str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", NUM_CLASSES]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", EMBEDDING])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="qis-edge tools/train.py")
    model.ir_version = 8  # opset 13 era; readable by every onnxruntime >= 1.11
    onnx.checker.check_model(model, full_check=True)
    return model


def build_mlp(weights: Weights) -> onnx.ModelProto:
    """MLP 140 -> 32 ReLU -> 16 ReLU (embedding) -> 5 -> Softmax, input x [N,140]."""
    nodes: list = []
    inits: list = []
    _dense(nodes, inits, "fc1", "x", "fc1.out", weights)
    nodes.append(helper.make_node("Relu", ["fc1.out"], ["fc1.act"], name="fc1.relu"))
    _head(nodes, inits, "fc1.act", weights, "fc2", "fc3")
    return _model("ecg_mlp", nodes, inits, ["N", BEAT_LENGTH])


def build_cnn(weights: Weights) -> onnx.ModelProto:
    """1-D CNN on x [N,1,140]: three Conv+ReLU (two MaxPools), GlobalAveragePool, dense head."""
    nodes: list = []
    inits: list = []
    src = "x"
    for i, (name, _cin, _cout, k, stride, pad) in enumerate(CNN_CONVS):
        w, b = weights[name]
        inits += [_init(name + ".weight", w), _init(name + ".bias", b)]
        nodes.append(helper.make_node("Conv", [src, name + ".weight", name + ".bias"], [name + ".out"],
                                      name=name, kernel_shape=[k], strides=[stride], pads=[pad, pad]))
        nodes.append(helper.make_node("Relu", [name + ".out"], [name + ".act"], name=name + ".relu"))
        src = name + ".act"
        if i < 2:
            nodes.append(helper.make_node("MaxPool", [src], [name + ".pool"], name=name + ".pool",
                                          kernel_shape=[2], strides=[2]))
            src = name + ".pool"
    nodes.append(helper.make_node("GlobalAveragePool", [src], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    _head(nodes, inits, "flat", weights, "fc1", "fc2")
    return _model("ecg_cnn", nodes, inits, ["N", 1, BEAT_LENGTH])


BUILDERS = {"ecg_mlp": build_mlp, "ecg_cnn": build_cnn}


def input_shape(arch: str, n: int) -> tuple[int, ...]:
    """The model input shape for `n` beats: [n,140] (MLP) or [n,1,140] (CNN)."""
    return (n, BEAT_LENGTH) if arch == "ecg_mlp" else (n, 1, BEAT_LENGTH)


def count_params(model: onnx.ModelProto) -> int:
    """Number of float weights and biases (initializers) of a float model."""
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one inference (N=1) over Conv, Gemm and MatMul nodes.

    Shapes come from onnx shape inference with the batch dimension fixed to 1.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    macs = 0
    for node in m.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            w = shapes[node.input[1]]  # [out_ch, in_ch/group, k...]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            out = shapes[node.output[0]]
            a = shapes[node.input[0]]
            transa = any(at.name == "transA" and at.i for at in node.attribute)
            inner = a[-2] if transa else a[-1]
            macs += int(np.prod(out)) * int(inner)
    return macs


class BeatReader:
    """onnxruntime CalibrationDataReader over training beats, in batches."""

    def __init__(self, x: np.ndarray, batch: int = 50) -> None:
        self._batches = [x[i:i + batch] for i in range(0, len(x), batch)]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next {"x": batch}, or None when all beats were given."""
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {"x": self._batches[self._next - 1]}

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._next = 0


def quantize_int8(float_path: Path, out_path: Path, calib_x: np.ndarray, qoperator: bool = False) -> None:
    """Static int8 quantization with onnxruntime: per-channel int8 weights, int8
    activations, MinMax calibration over `calib_x` (already shaped for the model).

    QDQ format (default): Softmax is left float, so both outputs leave an int8 tensor
    through DequantizeLinear (the ReLU before "embedding" folds into that tensor's
    quantization: zero point -128, range from 0). QOperator format (`qoperator`):
    QGemm nodes (com.microsoft), same calibration.
    """
    # Imported here: the quantization package is slow to import and only needed here.
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    reader = BeatReader(calib_x.astype(np.float32))
    quantize_static(
        str(float_path), str(out_path), reader,
        quant_format=QuantFormat.QOperator if qoperator else QuantFormat.QDQ,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        per_channel=True, calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=["softmax"],
    )


def run_onnx(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, embedding) of an ONNX model on x, with onnxruntime on one CPU thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    scores, embedding = session.run(["scores", "embedding"], {"x": x.astype(np.float32)})
    return scores, embedding


def classification_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-class recall/precision/F1 and the confusion matrix
    (rows = true class, columns = predicted)."""
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    tp = np.diag(conf).astype(np.float64)
    support = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros(NUM_CLASSES), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(NUM_CLASSES), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(NUM_CLASSES), where=denom > 0)
    return {
        "n": int(len(y)),
        "correct": int(tp.sum()),
        "accuracy": round(float(tp.sum() / len(y)), 6),
        "macro_f1": round(float(f1.mean()), 6),
        "recall": [round(float(v), 6) for v in recall],
        "precision": [round(float(v), 6) for v in precision],
        "f1": [round(float(v), 6) for v in f1],
        "confusion": conf.tolist(),
    }


def evaluate(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """Metrics of the ONNX model at `path` on (x, y), and its predictions."""
    scores, _ = run_onnx(path, x)
    pred = scores.argmax(axis=1)
    return classification_metrics(y, pred), pred


def file_info(path: Path) -> dict:
    """Size in bytes and sha256 of a file."""
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
