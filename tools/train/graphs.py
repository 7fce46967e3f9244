"""The float ONNX graphs of the reference models, built with onnx.helper from trained weights.

Contract (every model): opset 13, default domain only, input "x" float32 ([N,140] for the
MLP, [N,1,140] for the convolutional models), outputs "scores" (Softmax probabilities
[N,5]) and "embedding" [N,16]. fit.py trains the weights; quantize.py makes the int8 models.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
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
#: depthwise separable CNN: (name, in_ch, out_ch, kernel, stride, pad, groups), each + ReLU;
#: an AveragePool k=2 follows pw1; the dense head is MatMul + Add (as exporters write an
#: unfused Linear layer), not Gemm.
DSCNN_CONVS = (("conv1", 1, 8, 5, 2, 2, 1), ("dw1", 8, 8, 5, 1, 2, 8), ("pw1", 8, 16, 1, 1, 0, 1),
               ("dw2", 16, 16, 5, 1, 2, 16), ("pw2", 16, 16, 1, 1, 0, 1))
DSCNN_DENSE = CNN_DENSE


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
                              producer_name="qis-edge tools/train")
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


def _matmul_add(nodes: list, inits: list, name: str, src: str, dst: str, weights: Weights) -> None:
    w, b = weights[name]
    inits += [_init(name + ".weight", w.T), _init(name + ".bias", b)]
    nodes.append(helper.make_node("MatMul", [src, name + ".weight"], [name + ".mm"], name=name))
    nodes.append(helper.make_node("Add", [name + ".mm", name + ".bias"], [dst], name=name + ".add"))


def build_dscnn(weights: Weights) -> onnx.ModelProto:
    """Depthwise separable 1-D CNN on x [N,1,140]: conv, (depthwise, pointwise) twice with an
    AveragePool between, GlobalAveragePool, MatMul+Add head."""
    nodes: list = []
    inits: list = []
    src = "x"
    for name, _cin, _cout, k, stride, pad, groups in DSCNN_CONVS:
        w, b = weights[name]
        inits += [_init(name + ".weight", w), _init(name + ".bias", b)]
        nodes.append(helper.make_node("Conv", [src, name + ".weight", name + ".bias"], [name + ".out"], name=name,
                                      kernel_shape=[k], strides=[stride], pads=[pad, pad], group=groups))
        nodes.append(helper.make_node("Relu", [name + ".out"], [name + ".act"], name=name + ".relu"))
        src = name + ".act"
        if name == "pw1":
            nodes.append(helper.make_node("AveragePool", [src], ["pool1"], name="pool1", kernel_shape=[2], strides=[2]))
            src = "pool1"
    nodes.append(helper.make_node("GlobalAveragePool", [src], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    _matmul_add(nodes, inits, "fc1", "flat", "fc1.out", weights)
    nodes.append(helper.make_node("Relu", ["fc1.out"], ["embedding"], name="fc1.relu"))
    _matmul_add(nodes, inits, "fc2", "embedding", "logits", weights)
    nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], name="softmax", axis=1))
    return _model("ecg_dscnn", nodes, inits, ["N", 1, BEAT_LENGTH])


BUILDERS = {"ecg_mlp": build_mlp, "ecg_cnn": build_cnn, "ecg_dscnn": build_dscnn}


def input_shape(arch: str, n: int) -> tuple[int, ...]:
    """The model input shape for `n` beats: [n,140] (MLP) or [n,1,140] (convolutional)."""
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

