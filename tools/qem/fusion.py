"""How onnxruntime runs a QDQ graph: which QDQ groups stay in float32 rather than being
fused into its integer QLinear kernels, and whether it turns int8 activations into uint8.

The numerics of an Add or an AveragePool differ between the two paths (see numerics), and
whether onnxruntime fuses a DequantizeLinear -> op -> QuantizeLinear group depends on the
graph around it (a QuantizeLinear whose output is dequantized again for a graph output,
for one, keeps a QDQ Add in float). So the compiler asks onnxruntime: it optimizes the
graph as a default CPU session does and reports the compute nodes still in it.

On x86-64, onnxruntime also converts the int8 activations of a QDQ graph to uint8 (value
and zero point + 128) before fusing. Integer results do not change, but the fused
QLinearAdd and QLinearAveragePool add zero points in float32, so their rounding does.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import onnx

from .values import CompileError

COMPUTE = ("Add", "AveragePool", "Conv", "MatMul", "Gemm")


@dataclass
class Fusion:
    float_outputs: set[str] = field(default_factory=set)  # outputs of compute nodes kept in float
    uint8_outputs: set[str] = field(default_factory=set)  # outputs of fused Add/AveragePool run as uint8


def fusion(model: onnx.ModelProto) -> Fusion:
    """What onnxruntime's default CPU session does with the QDQ groups of `model`."""
    compute = [n for n in model.graph.node if n.op_type in COMPUTE and n.domain in ("", "ai.onnx")]
    if not compute:
        return Fusion()
    import onnxruntime as ort

    named = onnx.ModelProto()
    named.CopyFrom(model)
    names = {n.name for n in named.graph.node}
    for i, n in enumerate(named.graph.node):  # a fused node keeps the name of the op it replaces
        if not n.name:
            n.name = "qem_node_%d" % i
            while n.name in names:
                n.name += "_"
    compute = [n for n in named.graph.node if n.op_type in COMPUTE and n.domain in ("", "ai.onnx")]
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.log_severity_level = 3
        try:
            ort.InferenceSession(named.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CompileError("onnxruntime cannot load this model (%s), so the compiler cannot tell which "
                               "QDQ groups it fuses" % str(exc).strip().splitlines()[0]) from None
        optimized = onnx.load(options.optimized_model_filepath)
    kept = {o for n in optimized.graph.node if n.op_type in COMPUTE for o in n.output}
    # The activation zero point's type of a fused node says whether onnxruntime converted it.
    zp_type = {t.name: t.data_type for t in optimized.graph.initializer}
    fused_uint8 = {n.name for n in optimized.graph.node
                   if n.op_type in ("QLinearAdd", "QLinearAveragePool") and n.name
                   and zp_type.get(n.input[2]) == onnx.TensorProto.UINT8}
    return Fusion({n.output[0] for n in compute} & kept,
                  {n.output[0] for n in compute if n.name in fused_uint8})
