"""Handlers of QOperator graphs: QLinearConv, QLinearMatMul, com.microsoft QGemm /
QLinearAdd / QLinearAveragePool / QLinearGlobalAveragePool / QLinearSoftmax, and
ConvInteger / MatMulInteger (int32 outputs). Every handler is a function (lowering,
node, attrs); the integer numerics are onnxruntime's (see numerics).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import numerics as N
from .values import CompileError, Quantized, Softmaxed, dtype_of, where

if TYPE_CHECKING:
    from .lower import Lowering


def _input(lw: Lowering, node, i: int, scale_name: str, zp_name: str) -> int:
    """Quantized input i, its (scale, zero point) from inputs i+1, i+2."""
    x = lw.quantized(node, i)
    lw.set_qparams(x, lw.scalar(node, i + 1, scale_name), lw.scalar(node, i + 2, zp_name), node)
    return x


def _output(lw: Lowering, node, i_scale: int, i_zp: int, shape) -> int:
    zp = lw.scalar(node, i_zp, "y_zero_point")
    return lw.program.new_tensor(dtype_of(zp.dtype, where(node)), shape,
                                 float(np.float32(lw.scalar(node, i_scale, "y_scale"))), int(zp))


def _full_range(lw: Lowering, y: int) -> tuple[int, int]:
    return N.qrange(lw.program.signed(y))


def qlinear_conv(lw: Lowering, node, attrs) -> None:
    x = _input(lw, node, 0, "x_scale", "x_zero_point")
    w = lw.const(node, 3, "w").value
    ws = lw.const(node, 4, "w_scale").value.astype(np.float32)
    wz = lw.const(node, 5, "w_zero_point").value
    bias = lw.const(node, 8, "B").value if len(node.input) > 8 and node.input[8] else None
    acc, shape = _conv(lw, node, x, w, wz, bias, attrs, scratch=True)
    y = _output(lw, node, 6, 7, shape)
    xs, ys = lw.program.tensors[x].scale, lw.program.tensors[y].scale
    lw.program.requant(where(node), acc, y, [N.conv_multiplier(xs, s, ys) for s in ws.reshape(-1)],
                       int(np.prod(shape[2:])), *_full_range(lw, y))
    lw.env[node.output[0]] = Quantized(y)


def _conv(lw: Lowering, node, x: int, w: np.ndarray, wz, bias, attrs, scratch: bool):
    xt = lw.program.tensors[x]
    if w.ndim not in (3, 4) or w.ndim != len(xt.shape):
        raise CompileError("%s: weight of shape %s does not match input %s (1-D/2-D only)" % (where(node), w.shape,
                                                                                            xt.shape))
    if xt.shape[0] != 1:
        raise CompileError("%s: batch size must be 1, got %d" % (where(node), xt.shape[0]))
    group = int(attrs.get("group", 1))
    if w.shape[1] * group != xt.shape[1] or w.shape[0] % group:
        raise CompileError("%s: group=%d does not divide channels %d -> %d" % (where(node), group, xt.shape[1],
                                                                             w.shape[0]))
    win = lw.window_of(node, x, list(w.shape[2:]), attrs)
    return lw.program.conv(where(node), x, w, np.asarray(wz), bias, win, group, scratch)


def _qfc(lw: Lowering, node, x: int, w_nk, ws, wz, bias, i_scale: int, i_zp: int) -> None:
    acc, shape = lw.program.fc(where(node), x, np.ascontiguousarray(w_nk), np.asarray(wz), bias, True)
    y = _output(lw, node, i_scale, i_zp, shape)
    xs, ys = lw.program.tensors[x].scale, lw.program.tensors[y].scale
    lw.program.requant(where(node), acc, y, [N.conv_multiplier(xs, s, ys) for s in ws.reshape(-1)], 1,
                       *_full_range(lw, y))
    lw.env[node.output[0]] = Quantized(y)


def qlinear_matmul(lw: Lowering, node, attrs) -> None:
    x = _input(lw, node, 0, "a_scale", "a_zero_point")
    b = lw.const(node, 3, "b").value
    ws = lw.const(node, 4, "b_scale").value.astype(np.float32)
    wz = lw.const(node, 5, "b_zero_point").value
    xt = lw.program.tensors[x]
    if b.ndim == 2:
        _qfc(lw, node, x, b.T, ws, wz, None, 6, 7)
        return
    if b.ndim != 3 or len(xt.shape) != 3 or xt.shape[0] != b.shape[0] or ws.size > 1 or wz.size > 1:
        raise CompileError("%s: b must be 2-D, or 3-D with a's batch and per-tensor quantization; got a %s, b %s"
                           % (where(node), xt.shape, b.shape))
    nb, m, k = xt.shape
    n = b.shape[2]
    y = _output(lw, node, 6, 7, (nb, m, n))
    mult = N.conv_multiplier(xt.scale, ws.reshape(-1)[0], lw.program.tensors[y].scale)
    for i in range(nb):
        acc, _ = lw.program.fc(where(node), lw.program.view(x, (m, k), i * m * k), np.ascontiguousarray(b[i].T),
                               np.asarray(wz), None, True)
        lw.program.requant(where(node), acc, lw.program.view(y, (m, n), i * m * n), [mult], 1, *_full_range(lw, y))
    lw.env[node.output[0]] = Quantized(y)


def qgemm(lw: Lowering, node, attrs) -> None:
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
        raise CompileError("%s: transA=1 or alpha != 1 is not supported" % where(node))
    if len(node.input) < 8 or not node.input[7]:
        raise CompileError("%s: a float (unquantized) output is not supported" % where(node))
    x = _input(lw, node, 0, "a_scale", "a_zero_point")
    b = lw.const(node, 3, "B").value
    ws = lw.const(node, 4, "b_scale").value.astype(np.float32)
    wz = lw.const(node, 5, "b_zero_point").value
    bias = lw.const(node, 6, "C").value if node.input[6] else None
    _qfc(lw, node, x, b if attrs.get("transB", 0) else b.T, ws, wz, bias, 7, 8)


def qlinear_add(lw: Lowering, node, attrs) -> None:
    operands = []
    for i, names in ((0, ("A_scale", "A_zero_point")), (3, ("B_scale", "B_zero_point"))):
        v = lw.env.get(node.input[i])
        if isinstance(v, Quantized):
            operands.append(lw.program.operand(_input(lw, node, i, *names)))
        else:  # a constant operand (a bias)
            operands.append(lw.program.constant_operand(
                lw.const(node, i, "operand").value, float(np.float32(lw.scalar(node, i + 1, names[0]))),
                int(lw.scalar(node, i + 2, names[1])), where(node)))
    shape = lw.shapes.get(node.output[0]) or next(lw.program.tensors[o.tid].shape for o in operands if not o.data)
    y = _output(lw, node, 6, 7, shape)
    lw.program.add(where(node), operands[0], operands[1], y, *_full_range(lw, y), float_path=False, as_uint8=False)
    lw.env[node.output[0]] = Quantized(y)


def qlinear_average_pool(lw: Lowering, node, attrs) -> None:
    if attrs.get("channels_last", 0):
        raise CompileError("%s: channels_last=1 is not supported" % where(node))
    x = _input(lw, node, 0, "x_scale", "x_zero_point")
    shape = lw.program.tensors[x].shape
    kernel = list(attrs["kernel_shape"]) if node.op_type == "QLinearAveragePool" else list(shape[2:])
    win = lw.window_of(node, x, kernel, attrs if node.op_type == "QLinearAveragePool" else {})
    y = _output(lw, node, 3, 4, (1, shape[1]) + tuple(win.out))
    lw.pool_into(node, x, y, win, int(attrs.get("count_include_pad", 0)), *_full_range(lw, y))
    lw.env[node.output[0]] = Quantized(y)


def qlinear_softmax(lw: Lowering, node, attrs) -> None:
    x = _input(lw, node, 0, "X_scale", "x_zero_point")
    if attrs.get("axis", -1) not in (-1, len(lw.program.tensors[x].shape) - 1):
        raise CompileError("%s: only a last-axis Softmax is supported" % where(node))
    lw.env[node.output[0]] = Softmaxed(x)  # may feed only a DequantizeLinear or the output


def _integer(lw: Lowering, node, attrs, conv: bool) -> None:
    x = lw.quantized(node, 0)
    xz = int(lw.scalar(node, 2, "x_zero_point", np.array(0)))
    t = lw.program.tensors[x]
    if x in lw.unset:
        t.zero_point = xz
        lw.unset.discard(x)
    elif t.zero_point != xz:
        raise CompileError("%s: x_zero_point %d differs from the tensor's %d" % (where(node), xz, t.zero_point))
    w = lw.const(node, 1, "w").value
    wz = lw.const(node, 3, "w_zero_point").value if len(node.input) > 3 and node.input[3] else np.zeros(1, w.dtype)
    if conv:
        acc, _ = _conv(lw, node, x, w, wz, None, attrs, scratch=False)
    else:
        if w.ndim != 2:
            raise CompileError("%s: B must be 2-D, got %s" % (where(node), w.shape))
        acc, _ = lw.program.fc(where(node), x, np.ascontiguousarray(w.T), np.asarray(wz), None, False)
    lw.env[node.output[0]] = Quantized(acc)


def conv_integer(lw: Lowering, node, attrs) -> None:
    _integer(lw, node, attrs, True)


def matmul_integer(lw: Lowering, node, attrs) -> None:
    _integer(lw, node, attrs, False)


HANDLERS = {
    "QLinearConv": qlinear_conv, "QLinearMatMul": qlinear_matmul, "QGemm": qgemm, "QLinearAdd": qlinear_add,
    "QLinearAveragePool": qlinear_average_pool, "QLinearGlobalAveragePool": qlinear_average_pool,
    "QLinearSoftmax": qlinear_softmax, "ConvInteger": conv_integer, "MatMulInteger": matmul_integer,
}
