"""Window geometry of Conv and the pooling ops (1-D and 2-D), from ONNX attributes."""
from __future__ import annotations

from dataclasses import dataclass

from .values import CompileError


@dataclass
class Window:
    """kernel, strides, dilations, pads (begin, end) and output size per spatial axis."""

    in_spatial: list[int]
    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    pads_begin: list[int]
    pads_end: list[int]
    out: list[int]

    @property
    def padded(self) -> bool:
        return any(self.pads_begin) or any(self.pads_end)

    @property
    def in_2d(self) -> list[int]:
        """(H, W) as the kernels see the input: a 1-D input is H = 1."""
        return ([1] + self.in_spatial) if len(self.in_spatial) == 1 else list(self.in_spatial)

    def as_2d(self) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
        """(kernel, strides, dilations, pads_begin, out) in the kernels' 2-D form."""
        if len(self.kernel) == 2:
            return self.kernel, self.strides, self.dilations, self.pads_begin, self.out
        return [1] + self.kernel, [1] + self.strides, [1] + self.dilations, [0] + self.pads_begin, [1] + self.out


def window(in_shape: tuple[int, ...], kernel: list[int], attrs: dict, where: str) -> Window:
    """The Window of a Conv/MaxPool/AveragePool on an [N, C, spatial...] input."""
    sp = list(in_shape[2:])
    nd = len(sp)
    if nd not in (1, 2):
        raise CompileError("%s: only 1-D and 2-D spatial inputs are supported, got shape %s" % (where, in_shape))
    if len(kernel) != nd:
        raise CompileError("%s: a %d-D kernel on a %d-D input" % (where, len(kernel), nd))
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
    return Window(sp, list(kernel), strides, dil, pads[:nd], pads[nd:], out)
