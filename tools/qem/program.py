"""The integer program a .qem file holds: its tensors and kernel calls, and the emitters
that turn one integer op into a kernel call with its parameter block.

Program owns the tensor table (views share a base tensor's storage) and the op list; it
knows nothing about ONNX. Every emitter takes `where` ("node (OpType)") for its messages.
The parameter block of each opcode is documented on its kernel in qis.edge.kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import format as F
from . import numerics as N
from .geometry import Window
from .values import CompileError

INT32_LIMIT = 1 << 31


@dataclass
class Operand:
    """An 8-bit operand of an elementwise op: a tensor, or constant bytes (then tid is NONE)."""

    signed: bool
    scale: float
    zp: int
    nelem: int
    tid: int = F.NONE
    data: bytes = b""


class Program:
    def __init__(self) -> None:
        self.tensors: list[F.Tensor] = []
        self.alias: list[int] = []  # base tensor of a view, or itself
        self.start: list[int] = []  # element offset of a view into its base
        self.ops: list[F.Op] = []
        self.macs = 0

    # --- tensors ---

    def new_tensor(self, dt: int, shape, scale: float = 1.0, zp: int = 0, flags: int = 0) -> int:
        self.tensors.append(F.Tensor(dt, tuple(int(d) for d in shape), float(scale), int(zp), flags))
        self.alias.append(len(self.tensors) - 1)
        self.start.append(0)
        return len(self.tensors) - 1

    def view(self, tid: int, shape, start: int = 0) -> int:
        """A tensor sharing tid's storage: same elements reshaped, or a slice from `start`."""
        t = self.tensors[tid]
        n = int(np.prod(shape))
        if start + n > t.nelem or (start and t.flags & F.TF_INT32):
            raise CompileError("internal: view of %d elements as %s at %d" % (t.nelem, shape, start))
        v = self.new_tensor(t.dtype, shape, t.scale, t.zero_point, t.flags)
        self.alias[v] = self.alias[tid]
        self.start[v] = self.start[tid] + start
        return v

    def drop_last(self) -> None:
        """Forget the tensor created last (it turned out to be a view of another)."""
        self.tensors.pop()
        self.alias.pop()
        self.start.pop()

    def signed(self, tid: int) -> bool:
        return self.tensors[tid].dtype == F.DT_INT8

    def _accumulator(self, shape, scratch: bool) -> int:
        return self.new_tensor(F.DT_INT32, shape, flags=F.TF_INT32 | (F.TF_SCRATCH if scratch else 0))

    # --- integer ops ---

    def conv(self, where: str, x: int, w: np.ndarray, wzp: np.ndarray, bias: np.ndarray | None,
             window: Window, group: int, scratch: bool) -> tuple[int, tuple[int, ...]]:
        """An integer conv into a new int32 tensor (the shared scratch when `scratch`)."""
        xt = self.tensors[x]
        cout, cig = w.shape[0], w.shape[1]
        b = np.zeros(cout, np.int64) if bias is None else bias.astype(np.int64).reshape(-1)
        wz = np.broadcast_to(wzp.reshape(-1), (cout,)).astype(np.int64)
        wi = w.astype(np.int64)
        # 32 bits (kernels.conv): |acc| <= |bias| + 255 * sum|w - wz| for every input
        bound = np.abs(b) + 255 * np.abs(wi.reshape(cout, -1) - wz[:, None]).sum(axis=1)
        if bound.max(initial=0) >= INT32_LIMIT:
            raise CompileError("%s: an accumulator can reach %d, beyond int32 (too many taps of large weights)"
                               % (where, int(bound.max())))
        shift = 128 if w.dtype == np.int8 else 0
        k, s, d, p, o = window.as_2d()
        taps = cig * k[0] * k[1]
        wst = (wi + shift).reshape(cout, -1)
        xz = N.stored(self.signed(x), xt.zero_point)
        wzs = wz + shift
        folded = b - xz * wst.sum(axis=1) + taps * xz * wzs  # see kernels.conv
        # and its partial sums, as in fc
        if (np.abs(folded) + wzs * 255 * taps + 255 * 255 * taps).max(initial=0) >= INT32_LIMIT:
            raise CompileError("%s: a partial sum can reach beyond int32 (%d taps)" % (where, taps))
        params = [xt.shape[1], window.in_2d[0], window.in_2d[1], cout, o[0], o[1], k[0], k[1], s[0], s[1],
                  d[0], d[1], p[0], p[1], group, xz]
        params += folded.tolist() + wzs.tolist() + [0] * o[1]  # window sums of an output row
        out_shape = (1, cout) + tuple(window.out)
        acc = self._accumulator(out_shape, scratch)
        self.ops.append(F.Op(F.OP_CONV, x, out=acc, weights=wst.astype(np.uint8).tobytes(), params=params))
        self.macs += cout * o[0] * o[1] * cig * k[0] * k[1]
        return acc, out_shape

    def fc(self, where: str, x: int, w_nk: np.ndarray, wzp: np.ndarray, bias: np.ndarray | None,
           scratch: bool) -> tuple[int, tuple[int, ...]]:
        """y[M,N] = x[M,K] . w[N,K]^T + bias into a new int32 tensor."""
        xt = self.tensors[x]
        n, k = w_nk.shape
        if xt.shape[-1] != k:
            raise CompileError("%s: input %s does not match weight K=%d" % (where, xt.shape, k))
        m = xt.nelem // k
        b = np.zeros(n, np.int64) if bias is None else np.broadcast_to(bias.astype(np.int64).reshape(-1), (n,))
        wz = np.broadcast_to(wzp.reshape(-1), (n,)).astype(np.int64)
        shift = 128 if w_nk.dtype == np.int8 else 0
        wst = w_nk.astype(np.int64) + shift
        xz = N.stored(self.signed(x), xt.zero_point)
        wzs = wz + shift
        folded = b - xz * wst.sum(axis=1) + k * xz * wzs  # see kernels.fc
        # 32 bits (kernels.fc): c + (-wz * sum x) + dot, each partial sum
        bound = np.abs(folded) + wzs * 255 * k + 255 * 255 * k
        if bound.max(initial=0) >= INT32_LIMIT:
            raise CompileError("%s: a partial sum can reach %d, beyond int32 (K=%d too large)"
                               % (where, int(bound.max()), k))
        params = [m, k, n, xz] + folded.tolist() + wzs.tolist()
        out_shape = tuple(xt.shape[:-1]) + (n,)
        acc = self._accumulator(out_shape, scratch)
        self.ops.append(F.Op(F.OP_FC, x, out=acc, weights=wst.astype(np.uint8).tobytes(), params=params))
        self.macs += m * n * k
        return acc, out_shape

    def requant(self, where: str, acc: int, out: int, mults: list, inner: int, lo: int, hi: int,
                tie_lsb: list[float] | None = None, max_acc: list[int] | None = None) -> None:
        """out = sat(round(fl32(acc) * mult[c]) + zp) with channel c = (i // inner) % C.
        tie_lsb: per channel, how close (in output LSB) to a rounding tie a value must come
        to be marked for floatfix(); max_acc: per channel, the largest |acc| any input gives."""
        t = self.tensors[out]
        try:
            ms = [N.requant_params(m) for m in mults]
        except ValueError as exc:
            raise CompileError("%s: %s" % (where, exc)) from None
        sg = self.signed(out)
        params = [inner, len(ms), N.stored(sg, t.zero_point), N.stored(sg, lo), N.stored(sg, hi), int(bool(tie_lsb))]
        params += [m for m, _ in ms] + [s for _, s in ms]
        if tie_lsb:
            params += [N.tie_window(e, m, s, a) for e, (m, s), a in zip(tie_lsb, ms, max_acc)]
        self.ops.append(F.Op(F.OP_REQUANT, acc, out=out, params=params))

    def floatfix(self, where: str, x: int, acc: int, y: int, w_nk: np.ndarray, wzp: np.ndarray,
                 w_scale: np.ndarray, bias: np.ndarray | None, bias_scale: np.ndarray | None, lo: int, hi: int,
                 conv: list[int] | None = None) -> None:
        """Recompute in float32, as onnxruntime's float MatMul/Gemm/Conv does, the outputs
        that requant() marked near a tie (see floatfix.floatfix); conv: the conv's geometry
        (its parameter block's first 16 words), else one row of a fully connected layer."""
        xt, yt = self.tensors[x], self.tensors[y]
        n, k = w_nk.shape
        if conv is None and xt.nelem != k:
            raise CompileError("%s: onnxruntime runs this layer in float32 on %d rows; the edge runtime reproduces "
                               "a float MatMul/Gemm of one row only" % (where, xt.nelem // k))
        geometry = (conv if conv is not None else [0] * 14 + [1, 0]) + [int(conv is not None)]
        try:
            tables = N.floatfix_tables(self.signed(x), xt.scale, xt.zero_point, w_nk, wzp, w_scale, bias, bias_scale,
                                       yt.scale, yt.zero_point, lo, hi, geometry)
        except ValueError as exc:
            raise CompileError("%s: %s" % (where, exc)) from None
        self.ops.append(F.Op(F.OP_FCFIX, x, acc, y, params=[1, k, n, N.stored(self.signed(y), lo)] + tables))

    def global_sum(self, where: str, x: int) -> tuple[int, int]:
        """Per-channel sums of (x - zp) over all positions: (int32 tensor [1,C], count)."""
        xt = self.tensors[x]
        count = xt.nelem // xt.shape[1]
        if count >= 1 << 23:
            raise CompileError("%s: %d values per channel, too many to sum in int32" % (where, count))
        acc = self._accumulator((1, xt.shape[1]), True)
        self.ops.append(F.Op(F.OP_AVGSUM, x, out=acc,
                             params=[xt.shape[1], count, N.stored(self.signed(x), xt.zero_point)]))
        return acc, count

    def lut(self, x: int, y: int, table: list[int]) -> None:
        self.ops.append(F.Op(F.OP_LUT, x, out=y, params=list(table)))

    def maxpool(self, x: int, window: Window) -> int:
        xt = self.tensors[x]
        k, s, d, p, o = window.as_2d()
        y = self.new_tensor(xt.dtype, (1, xt.shape[1]) + tuple(window.out), xt.scale, xt.zero_point)
        params = [xt.shape[1], window.in_2d[0], window.in_2d[1], o[0], o[1], k[0], k[1], s[0], s[1], d[0], d[1],
                  p[0], p[1]]
        self.ops.append(F.Op(F.OP_MAXPOOL, x, out=y, params=params))
        return y

    def avgpool(self, where: str, x: int, y: int, window: Window, count: int, lo: int, hi: int,
                as_uint8: bool) -> None:
        """QLinearAveragePool with a fixed divisor `count` (see numerics); as_uint8: int8
        tensors take part as onnxruntime's uint8 conversion of them (see fusion)."""
        a = self.as_uint8(self.operand(x)) if as_uint8 else self.operand(x)
        yo, lo, hi = self._output_as(y, lo, hi, as_uint8)
        k, s, _d, p, o = window.as_2d()
        try:
            table, thr = N.avgpool_tables(a.signed, a.scale, a.zp, yo.scale, yo.zp, count, k[0] * k[1], lo, hi)
        except ValueError as exc:
            raise CompileError("%s: %s" % (where, exc)) from None
        params = [self.tensors[x].shape[1], window.in_2d[0], window.in_2d[1], o[0], o[1], k[0], k[1], s[0], s[1],
                  p[0], p[1], N.stored(yo.signed, lo), len(thr)] + table + thr + [0] * (k[0] * k[1])
        self.ops.append(F.Op(F.OP_AVGPOOL, x, out=y, params=params))

    def operand(self, tid: int) -> Operand:
        t = self.tensors[tid]
        return Operand(self.signed(tid), t.scale, t.zero_point, t.nelem, tid)

    def constant_operand(self, values: np.ndarray, scale: float, zp: int, where: str) -> Operand:
        """An int8/uint8 constant (a bias vector) as an operand whose bytes go into the file."""
        if values.dtype not in (np.int8, np.uint8):
            raise CompileError("%s: a constant operand must be int8 or uint8, got %s" % (where, values.dtype))
        signed = values.dtype == np.int8
        data = (values.astype(np.int16) + (128 if signed else 0)).astype(np.uint8).tobytes()
        return Operand(signed, scale, zp, values.size, data=data)

    @staticmethod
    def as_uint8(o: Operand) -> Operand:
        """An int8 operand as onnxruntime's uint8 conversion sees it: the same stored bytes."""
        return Operand(False, o.scale, o.zp + 128, o.nelem, o.tid, o.data) if o.signed else o

    def _output_as(self, y: int, lo: int, hi: int, as_uint8: bool) -> tuple[Operand, int, int]:
        yo = self.operand(y)
        if as_uint8 and yo.signed:
            return self.as_uint8(yo), lo + 128, hi + 128
        return yo, lo, hi

    def add(self, where: str, a: Operand, b: Operand, y: int, lo: int, hi: int, float_path: bool,
            as_uint8: bool) -> None:
        """y = a + b (an operand smaller than y repeats: a broadcast bias), as onnxruntime's
        QLinearAdd computes it, or (float_path) its DequantizeLinear -> Add -> QuantizeLinear;
        as_uint8: int8 tensors take part as onnxruntime's uint8 conversion of them."""
        ty = self.tensors[y]
        if as_uint8:
            a, b = self.as_uint8(a), self.as_uint8(b)
        yo, lo, hi = self._output_as(y, lo, hi, as_uint8)
        for o in (a, b):
            if o.nelem != ty.nelem and (o.nelem == 1 or o.nelem != ty.shape[-1]):
                raise CompileError("%s: broadcasting %d values to %s is not supported (same shape, or a vector "
                                   "along the last axis)" % (where, o.nelem, ty.shape))
        try:
            tab_a, tab_b, thr = N.add_tables(a.signed, a.scale, a.zp, b.signed, b.scale, b.zp, yo.scale, yo.zp,
                                             lo, hi, float_path)
        except ValueError as exc:
            raise CompileError("%s: %s" % (where, exc)) from None
        if a.data and b.data:
            raise CompileError("%s: both operands are constants" % where)
        params = [ty.nelem, a.nelem, b.nelem, N.stored(yo.signed, lo), len(thr)] + tab_a + tab_b + thr + [0, 0]
        self.ops.append(F.Op(F.OP_ADD, a.tid, b.tid, y, weights=a.data or b.data, params=params))
