"""Handlers of QDQ graphs: DequantizeLinear -> op [-> Relu/Clip] -> QuantizeLinear.

A DequantizeLinear makes a Pending value; Conv/MatMul/Gemm/Add/pooling make Pending values
of their own kind; the QuantizeLinear materializes them (Lowering.materialize). Every
handler is a function (lowering, node, attrs).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .values import CompileError, Const, FloatInput, Pending, Quantized, Softmaxed, dtype_of, where

if TYPE_CHECKING:
    from .lower import Lowering


def quantize_linear(lw: Lowering, node, attrs) -> None:
    v = lw.env.get(node.input[0])
    scale = lw.scalar(node, 1, "y_scale")
    zp = lw.scalar(node, 2, "y_zero_point", np.array(0, np.uint8))
    if attrs.get("saturate", 1) != 1 or zp.dtype not in (np.int8, np.uint8):
        raise CompileError("%s: output dtype %s is not supported (int8, uint8)" % (where(node), zp.dtype))
    if isinstance(v, Softmaxed):  # probabilities re-quantized for the output: keep the logits
        lw.env[node.output[0]] = v
    elif isinstance(v, FloatInput):
        tid = lw.program.new_tensor(dtype_of(zp.dtype, where(node)), v.shape, float(np.float32(scale)), int(zp))
        lw.inputs.append((v.name, tid))
        lw.env[node.output[0]] = Quantized(tid)
    elif isinstance(v, Pending):
        lw.env[node.output[0]] = Quantized(lw.materialize(node, v, scale, zp))
    else:
        raise CompileError("%s: input %r is %s, not the float graph input or a value computed from dequantized "
                           "tensors" % (where(node), node.input[0], lw.describe(node.input[0])))


def dequantize_linear(lw: Lowering, node, attrs) -> None:
    v = lw.env.get(node.input[0])
    if isinstance(v, Const):
        scale = lw.const(node, 1, "x_scale").value.astype(np.float32)
        zp = (lw.const(node, 2, "x_zero_point").value if len(node.input) > 2 and node.input[2]
              else np.zeros_like(scale, dtype=v.value.dtype))
        if v.value.dtype not in (np.int8, np.uint8, np.int32):
            raise CompileError("%s: constant dtype %s is not supported" % (where(node), v.value.dtype))
        lw.env[node.output[0]] = Const(v.value, scale, zp, int(attrs.get("axis", 1)))
    elif isinstance(v, Softmaxed):
        lw.env[node.output[0]] = v
    elif isinstance(v, Quantized):
        t = lw.program.tensors[v.tid]
        lw.set_qparams(v.tid, lw.scalar(node, 1, "x_scale"), lw.scalar(node, 2, "x_zero_point", np.array(0)), node)
        lw.env[node.output[0]] = Pending("dq", [v.tid], t.shape)
    else:
        raise CompileError("%s: input %r is %s, not a quantized tensor or constant"
                           % (where(node), node.input[0], lw.describe(node.input[0])))


def _dequantized(lw: Lowering, node, i: int) -> Pending:
    """Input i must be a dequantized activation with no Relu/Clip in between."""
    v = lw.env.get(node.input[i])
    if not isinstance(v, Pending) or v.kind != "dq" or v.clamped:
        raise CompileError("%s: input %r must be a dequantized activation (DequantizeLinear of a quantized "
                           "tensor); it is %s" % (where(node), node.input[i], lw.describe(node.input[i])))
    return v


def _weight(lw: Lowering, node, i: int, what: str, channel_axis: int) -> Const:
    c = lw.const(node, i, what)
    if c.scale is None or c.value.dtype not in (np.int8, np.uint8):
        raise CompileError("%s: %s must be an int8/uint8 initializer behind a DequantizeLinear" % (where(node), what))
    if c.scale.size > 1 and c.axis % c.value.ndim != channel_axis:
        raise CompileError("%s: per-channel %s scales must be along axis %d, got axis %d"
                           % (where(node), what, channel_axis, c.axis))
    return c


def _bias(lw: Lowering, node, i: int) -> Const | None:
    if i >= len(node.input) or not node.input[i]:
        return None
    c = lw.const(node, i, "bias")
    if c.scale is None or c.value.dtype != np.int32:
        raise CompileError("%s: bias must be an int32 initializer behind a DequantizeLinear" % where(node))
    return c


def conv(lw: Lowering, node, attrs) -> None:
    x = _dequantized(lw, node, 0)
    w = _weight(lw, node, 1, "weight", 0)
    xt = lw.program.tensors[x.src[0]]
    if w.value.ndim != len(xt.shape):
        raise CompileError("%s: weight of shape %s does not match input %s" % (where(node), w.value.shape, xt.shape))
    if xt.shape[0] != 1:
        raise CompileError("%s: batch size must be 1, got %d" % (where(node), xt.shape[0]))
    group = int(attrs.get("group", 1))
    cout, cig = w.value.shape[:2]
    if cig * group != xt.shape[1] or cout % group:
        raise CompileError("%s: group=%d does not divide channels %d -> %d" % (where(node), group, xt.shape[1], cout))
    if list(attrs.get("kernel_shape", w.value.shape[2:])) != list(w.value.shape[2:]):
        raise CompileError("%s: kernel_shape %s differs from the weight %s" % (where(node), attrs["kernel_shape"],
                                                                             w.value.shape))
    win = lw.window_of(node, x.src[0], list(w.value.shape[2:]), attrs)
    bias = _bias(lw, node, 2)
    info = dict(node=node, w=w.value, wzp=np.asarray(w.zp), w_scale=w.scale, bias=None if bias is None else bias.value,
                bias_scale=None if bias is None else bias.scale, window=win, group=group)
    lw.env[node.output[0]] = Pending("conv", [x.src[0]], (1, cout) + tuple(win.out), info)


def _fc(lw: Lowering, node, w_nk: np.ndarray, c: Const, bias: Const | None) -> None:
    x = _dequantized(lw, node, 0)
    info = dict(node=node, w=np.ascontiguousarray(w_nk), wzp=np.asarray(c.zp), w_scale=c.scale,
                bias=None if bias is None else bias.value, bias_scale=None if bias is None else bias.scale)
    lw.env[node.output[0]] = Pending("fc", [x.src[0]], tuple(x.shape[:-1]) + (w_nk.shape[0],), info)


def matmul(lw: Lowering, node, attrs) -> None:
    c = _weight(lw, node, 1, "B", 1)
    if c.value.ndim != 2:
        raise CompileError("%s: B must be 2-D, got %s" % (where(node), c.value.shape))
    _fc(lw, node, c.value.T, c, None)


def gemm(lw: Lowering, node, attrs) -> None:
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise CompileError("%s: transA=1, alpha != 1 or beta != 1 is not supported" % where(node))
    c = _weight(lw, node, 1, "B", 0 if attrs.get("transB", 0) else 1)
    _fc(lw, node, c.value if attrs.get("transB", 0) else c.value.T, c, _bias(lw, node, 2))


def add(lw: Lowering, node, attrs) -> None:
    """Two dequantized activations (a residual), or one and a dequantized constant (a bias)."""
    srcs = []
    for i in (0, 1):
        v = lw.env.get(node.input[i])
        if isinstance(v, Const) and v.scale is not None:
            srcs.append(v)
        else:
            srcs.append(_dequantized(lw, node, i).src[0])
    if all(isinstance(s, Const) for s in srcs):
        raise CompileError("%s: both operands are constants" % where(node))
    shape = lw.shapes.get(node.output[0]) or next(lw.program.tensors[s].shape for s in srcs if not isinstance(s, Const))
    lw.env[node.output[0]] = Pending("add", srcs, tuple(shape), dict(node=node))


def _clamp(lw: Lowering, node, lo: float, hi: float) -> None:
    v = lw.env.get(node.input[0])
    if not isinstance(v, Pending) or v.kind == "pool":
        raise CompileError("%s: must follow a Conv/MatMul/Gemm/Add or DequantizeLinear in a QDQ graph; its input "
                           "is %s" % (where(node), lw.describe(node.input[0])))
    lw.env[node.output[0]] = Pending(v.kind, v.src, v.shape, v.info, max(v.lo, lo), min(v.hi, hi))


def relu(lw: Lowering, node, attrs) -> None:
    _clamp(lw, node, 0.0, math.inf)


def clip(lw: Lowering, node, attrs) -> None:
    lo = attrs.get("min", -math.inf)
    hi = attrs.get("max", math.inf)
    if len(node.input) > 1 and node.input[1]:
        lo = float(lw.scalar(node, 1, "min"))
    if len(node.input) > 2 and node.input[2]:
        hi = float(lw.scalar(node, 2, "max"))
    _clamp(lw, node, lo, hi)


def _pool(lw: Lowering, node, attrs, kernel: list[int] | None) -> None:
    v = lw.env.get(node.input[0])
    if not isinstance(v, Pending):
        raise CompileError("%s: input must be dequantized (QDQ); it is %s (use QLinear ops otherwise)"
                           % (where(node), lw.describe(node.input[0])))
    v = _dequantized(lw, node, 0)
    x = v.src[0]
    shape = lw.program.tensors[x].shape
    if attrs.get("dilations") and set(attrs["dilations"]) != {1}:
        raise CompileError("%s: dilated average pooling is not supported" % where(node))
    win = lw.window_of(node, x, kernel if kernel is not None else list(shape[2:]), attrs)
    info = dict(node=node, window=win, count_include_pad=int(attrs.get("count_include_pad", 0)))
    lw.env[node.output[0]] = Pending("pool", [x], (1, shape[1]) + tuple(win.out), info)


def average_pool(lw: Lowering, node, attrs) -> None:
    _pool(lw, node, attrs, list(attrs["kernel_shape"]))


def global_average_pool(lw: Lowering, node, attrs) -> None:
    _pool(lw, node, {}, None)


def max_pool(lw: Lowering, node, attrs) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise CompileError("%s: the Indices output is not supported" % where(node))
    if attrs.get("storage_order", 0):
        raise CompileError("%s: storage_order=1 is not supported" % where(node))
    v = lw.env.get(node.input[0])
    if isinstance(v, Pending):  # max commutes with dequantization: pool the integers
        x = _dequantized(lw, node, 0).src[0]
    else:
        x = lw.quantized(node, 0)
    y = lw.program.maxpool(x, lw.window_of(node, x, list(attrs["kernel_shape"]), attrs))
    t = lw.program.tensors[y]
    lw.env[node.output[0]] = Pending("dq", [y], t.shape) if isinstance(v, Pending) else Quantized(y)


def reshape(lw: Lowering, node, attrs) -> None:
    """Flatten/Reshape/Squeeze/Unsqueeze: a view of the same bytes."""
    v = lw.env.get(node.input[0])
    shape = lw.shapes.get(node.output[0])
    if not shape:
        raise CompileError("%s: output shape unknown (run shape inference)" % where(node))
    if isinstance(v, Quantized):
        lw.env[node.output[0]] = Quantized(lw.program.view(v.tid, shape))
    elif isinstance(v, Pending) and v.kind == "dq":
        lw.env[node.output[0]] = Pending("dq", [lw.program.view(v.src[0], shape)], shape, lo=v.lo, hi=v.hi)
    elif isinstance(v, Pending) and v.kind == "pool":
        lw.env[node.output[0]] = Pending("pool", v.src, shape, v.info, v.lo, v.hi)
    else:
        raise CompileError("%s: input %r is %s, not a quantized or dequantized tensor"
                           % (where(node), node.input[0], lw.describe(node.input[0])))


def softmax(lw: Lowering, node, attrs) -> None:
    v = _dequantized(lw, node, 0)
    if attrs.get("axis", -1) not in (-1, len(v.shape) - 1):
        raise CompileError("%s: only a last-axis Softmax is supported" % where(node))
    lw.env[node.output[0]] = Softmaxed(lw.program.view(v.src[0], v.shape))


HANDLERS = {
    "QuantizeLinear": quantize_linear, "DequantizeLinear": dequantize_linear, "Conv": conv, "MatMul": matmul,
    "Gemm": gemm, "Add": add, "Relu": relu, "Clip": clip, "AveragePool": average_pool,
    "GlobalAveragePool": global_average_pool, "MaxPool": max_pool, "Flatten": reshape, "Reshape": reshape,
    "Squeeze": reshape, "Unsqueeze": reshape, "Softmax": softmax,
}
