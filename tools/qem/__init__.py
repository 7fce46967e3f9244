"""The ONNX -> .qem compiler: `compile(model)` lowers a quantized ONNX graph to the integer
ops of the edge runtime (qis.edge.model) and serializes it.

Accepted graphs (opset >= 10; a fixed batch of 1 or a symbolic batch, compiled as 1):
- QOperator ops: QLinearConv (1-D/2-D, pads/auto_pad, strides, dilations, group),
  QLinearMatMul, QGemm / QLinearAdd / QLinearAveragePool / QLinearGlobalAveragePool /
  QLinearSoftmax (com.microsoft), ConvInteger and MatMulInteger (int32 outputs), MaxPool.
- QDQ patterns: DequantizeLinear -> Conv/MatMul/Gemm/Add [-> Relu/Clip] -> QuantizeLinear
  (Relu/Clip folds into the output clamp; an Add may take a dequantized constant, the bias
  of a MatMul); MaxPool, AveragePool, GlobalAveragePool between DequantizeLinear and
  QuantizeLinear; a DequantizeLinear -> QuantizeLinear rescale; Flatten/Reshape/Squeeze/
  Unsqueeze are views.
- QuantizeLinear on the graph input; DequantizeLinear, or DequantizeLinear -> Softmax, on
  outputs (a Softmax output keeps its int8 logits; the device applies Softmax on demand).
Anything else is refused with CompileError naming the node, its op type and the reason.
The numerics are onnxruntime's CPU kernels' (qis.tools.qem.numerics), including the QDQ
groups it leaves in float32 (qis.tools.qem.fusion asks its optimizer which).
"""
from __future__ import annotations

from pathlib import Path

import onnx

from . import format as F
from .lower import Lowering
from .numerics import requant_params
from .values import CompileError

__all__ = ["CompileError", "compile", "requant_params", "summary"]


def compile(model: onnx.ModelProto | str | Path) -> tuple[bytes, F.QemModel]:  # noqa: A001 - the public entry
    """Compile a quantized ONNX model (proto or path): (.qem bytes, the planned model)."""
    if not isinstance(model, onnx.ModelProto):
        try:
            model = onnx.load(str(model))
        except Exception as exc:  # onnx raises DecodeError, OSError, ...
            raise CompileError("cannot read ONNX model %s: %s" % (model, exc)) from None
    qm = Lowering(model).run()
    return F.write(qm), qm


def summary(qm: F.QemModel, size: int) -> dict:
    """Counts printed by `qis model compile` and used by the benchmarks."""
    ops: dict[str, int] = {}
    for op in qm.ops:
        ops[F.OP_NAMES[op.opcode]] = ops.get(F.OP_NAMES[op.opcode], 0) + 1
    return {"ops": ops, "weight_bytes": sum(len(op.weights) for op in qm.ops),
            "param_bytes": sum(len(op.weights) + 4 * len(op.params) for op in qm.ops), "macs": qm.macs,
            "arena_bytes": qm.arena_bytes, "scratch_bytes": 4 * qm.scratch_words, "file_bytes": size}
