"""The values of the ONNX -> .qem lowering: what a graph edge holds while the graph is walked.

- Quantized: an 8-bit tensor of the plan (its index).
- Pending: a float value of a QDQ graph, held back until the QuantizeLinear that gives it
  an output scale decides how it is computed in integers.
- Const: an initializer, possibly behind a DequantizeLinear (then scale/zp per axis).
- FloatInput: the float graph input, before its QuantizeLinear.
- Softmaxed: int8 logits whose Softmax the device applies on demand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ToolError


class CompileError(ToolError):
    """The ONNX graph uses something the edge runtime does not support; the message names
    the node, its op type and what is not supported."""


@dataclass
class Quantized:
    tid: int


@dataclass
class Pending:
    """kind: "dq" (a dequantized tensor), "pool" (an average of one), "conv", "fc", "add"
    (two dequantized tensors, or one and a constant), each with the clamp of a folded
    Relu/Clip in [lo, hi]."""

    kind: str
    src: list[int]
    shape: tuple[int, ...]
    info: dict = field(default_factory=dict)
    lo: float = -math.inf
    hi: float = math.inf

    @property
    def clamped(self) -> bool:
        return self.lo > -math.inf or self.hi < math.inf


@dataclass
class Const:
    value: np.ndarray
    scale: np.ndarray | None = None
    zp: np.ndarray | None = None
    axis: int = 1


@dataclass
class FloatInput:
    name: str
    shape: tuple[int, ...]


@dataclass
class Softmaxed:
    tid: int


def where(node) -> str:
    """How messages name a node: "name (OpType)"."""
    return "%s (%s)" % (node.name or "<unnamed>", node.op_type)


def dtype_of(zp_dtype: np.dtype, place: str) -> int:
    """The .qem dtype of an 8-bit zero point's type."""
    from .format import DT_INT8, DT_UINT8

    if zp_dtype == np.int8:
        return DT_INT8
    if zp_dtype == np.uint8:
        return DT_UINT8
    raise CompileError("%s: 8-bit activations must be int8 or uint8, got %s" % (place, zp_dtype))
