"""Intermediate values of the ONNX -> .qem lowering, requantization and window geometry."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from . import qem_format as F
from .errors import ToolError


class CompileError(ToolError):
    """The ONNX graph uses something the edge runtime does not support."""


@dataclass
class QT:
    """A quantized activation (tensor index into the plan)."""

    tid: int


@dataclass
class FD:
    """A float value of the QDQ graph, pending until a QuantizeLinear gives its output scale.

    kind: "dq" (plain dequantized tensor), "pool" (average of one), "conv", "fc", "add".
    """

    kind: str
    src: list[int]
    shape: tuple[int, ...]
    info: dict = field(default_factory=dict)
    lo: float = -math.inf
    hi: float = math.inf


@dataclass
class Const:
    """An initializer, possibly dequantized (q holds the integers, scale/zp per axis)."""

    value: np.ndarray
    scale: np.ndarray | None = None
    zp: np.ndarray | None = None
    axis: int = 1


@dataclass
class FloatIn:
    name: str
    shape: tuple[int, ...]


@dataclass
class Softmaxed:
    tid: int


def requant_params(mult: np.float32) -> tuple[int, int]:
    """(M, S) with mult == M * 2**-S exactly, M in [2**23, 2**24).

    A multiplier below 2**-25 (a dead channel: its weight scale is ~0) maps every
    |acc| < 2**24 to 0, so it is stored as (0, 1).
    """
    m = float(np.float32(mult))
    if not m > 0 or not math.isfinite(m):
        raise ValueError("requantization multiplier must be positive and finite, got %r" % m)
    if m < 2.0**-25:
        return 0, 1
    mant, exp = math.frexp(m)
    big = int(mant * (1 << 24))
    shift = 24 - exp
    if not 1 <= shift <= 62:
        raise ValueError("requantization multiplier %r out of range" % m)
    return big, shift


def _stored(dt: int, q: int) -> int:
    return q + 128 if dt == F.DT_INT8 else q


def _dtype_of(arr_dtype: np.dtype, where: str) -> int:
    if arr_dtype == np.int8:
        return F.DT_INT8
    if arr_dtype == np.uint8:
        return F.DT_UINT8
    raise CompileError("%s: 8-bit activations must be int8 or uint8, got %s" % (where, arr_dtype))


def _pool_geometry(node: onnx.NodeProto, in_shape: tuple[int, ...], kernel: list[int],
                   attrs: dict, where: str) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """(kernel, strides, dilations, pads_begin, out_spatial) for a 1-D/2-D window op."""
    sp = list(in_shape[2:])
    nd = len(sp)
    if nd not in (1, 2):
        raise CompileError("%s: only 1-D and 2-D spatial inputs are supported, got shape %s" % (where, in_shape))
    strides = list(attrs.get("strides", [1] * nd))
    dil = list(attrs.get("dilations", [1] * nd))
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if attrs.get("ceil_mode", 0):
        raise CompileError("%s: ceil_mode=1 is not supported" % where)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nd)
        for i in range(nd):
            out = -(-sp[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - sp[i])
            small, large = total // 2, total - total // 2
            pads[i], pads[i + nd] = (small, large) if auto == "SAME_UPPER" else (large, small)
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    elif auto != "NOTSET":
        raise CompileError("%s: auto_pad=%s is not supported" % (where, auto))
    out = [(sp[i] + pads[i] + pads[i + nd] - (kernel[i] - 1) * dil[i] - 1) // strides[i] + 1 for i in range(nd)]
    if min(out) < 1:
        raise CompileError("%s: window larger than the padded input" % where)
    return kernel, strides, dil, pads[:nd], out


def _geom2d(kernel, strides, dil, pads, out):
    """Extend 1-D geometry to the kernels' 2-D form (H = 1)."""
    if len(kernel) == 1:
        return [1] + kernel, [1] + strides, [1] + dil, [0] + pads, [1] + out
    return kernel, strides, dil, pads, out
