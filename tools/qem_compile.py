"""`qis model compile MODEL.onnx -o MODEL.qem`: lower a quantized ONNX graph to integer ops.

Accepted graphs (opset >= 10, batch size 1 is compiled; a symbolic batch becomes 1):
- QOperator ops: QLinearConv (1-D/2-D, pads/auto_pad, strides, dilations, group),
  QLinearMatMul, QGemm / QLinearAdd / QLinearGlobalAveragePool / QLinearSoftmax
  (com.microsoft), ConvInteger and MatMulInteger (int32 outputs), MaxPool on int8.
- QDQ patterns: DequantizeLinear -> Conv/MatMul/Gemm/Add [-> Relu/Clip] -> QuantizeLinear
  become integer ops (Relu/Clip folds into the output clamp); MaxPool, AveragePool,
  GlobalAveragePool between DQ and Q; Flatten/Reshape/Squeeze/Unsqueeze are views.
- QuantizeLinear on the graph input; DequantizeLinear, or DequantizeLinear -> Softmax, on
  outputs (a Softmax output keeps its int8 logits; the device applies Softmax on demand).
Anything else is refused with CompileError naming the node and its op type.

Requantization: onnxruntime (MLAS) multiplies the int32 accumulator by a float32
multiplier fl32(fl32(x_scale * w_scale) / y_scale), rounds half to even and saturates.
The file stores that multiplier exactly as (M, S) with M its 24-bit mantissa, and the
kernels emulate the float32 product in integers (see qis.edge.kernels).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from . import qem_format as F
from .qem_ir import CompileError, requant_params
from .qem_lower import Compiler

__all__ = ["CompileError", "compile_bytes", "compile_model", "requant_params", "summary"]


def compile_model(model: onnx.ModelProto | str | Path) -> F.QemModel:
    """Lower a quantized ONNX model (proto or path) to a planned QemModel."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    return Compiler(model).run()


def compile_bytes(model: onnx.ModelProto | str | Path) -> tuple[bytes, F.QemModel]:
    """Compile and serialize: (.qem bytes, the planned model)."""
    qm = compile_model(model)
    return F.write(qm), qm


def summary(qm: F.QemModel, size: int) -> dict:
    """Counts printed by the CLI and used by the benchmarks."""
    params = sum(len(op.weights) + 4 * len(op.params) for op in qm.ops)
    ops: dict[str, int] = {}
    for op in qm.ops:
        ops[F.OP_NAMES[op.opcode]] = ops.get(F.OP_NAMES[op.opcode], 0) + 1
    return {"ops": ops, "weight_bytes": sum(len(op.weights) for op in qm.ops), "param_bytes": params,
            "macs": qm.macs, "arena_bytes": qm.arena_bytes, "scratch_bytes": 4 * qm.scratch_words,
            "file_bytes": size}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="quantized ONNX model (QDQ or QOperator)")
    parser.add_argument("-o", "--output", help="output .qem file (default: next to the model)")


def run(args: argparse.Namespace) -> int:
    """CLI entry: compile, write, print a summary."""
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".qem")
    try:
        data, qm = compile_bytes(args.model)
    except CompileError as exc:
        print("error: %s" % exc)
        return 1
    out.write_bytes(data)
    s = summary(qm, len(data))
    print("compiled %s -> %s" % (args.model, out))
    print("  ops:    %s" % ", ".join("%s x%d" % kv for kv in s["ops"].items()))
    print("  params: %d weight bytes, %d bytes with int32 biases and requant params" % (s["weight_bytes"], s["param_bytes"]))
    print("  MACs:   %d per inference" % s["macs"])
    print("  arena:  %d bytes (+ %d bytes int32 scratch)" % (s["arena_bytes"], s["scratch_bytes"]))
    print("  file:   %d bytes" % s["file_bytes"])
    return 0
