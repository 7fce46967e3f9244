"""The arithmetic that makes the kernels agree with onnxruntime bit for bit.

Each function names the onnxruntime (MLAS) CPU path it reproduces. The kernels work in
32-bit integers (qis.edge.kernels); what onnxruntime does in float32 is either exact in
integers (requantization: a float32 product, emulated) or precomputed here with numpy
float32 arithmetic into tables the kernels index:

- Conv/MatMul/Gemm (QLinearConv, QLinearMatMul, QGemm, their QDQ forms): int32
  accumulator, then float32(acc) * float32 multiplier, round half to even, + zero point,
  saturate (MlasRequantizeOutput). The multiplier is fl32(fl32(x_scale * w_scale) / y_scale).
- GlobalAveragePool (QLinearGlobalAveragePool, and an AveragePool whose window is the
  whole unpadded input): int32 window sum of (x - zp), times fl32(x_scale / fl32(y_scale
  * N)), as above (MlasQLinearGlobalAveragePool).
- AveragePool (QLinearAveragePool): each x dequantized to fl32(x_scale * (x - zp)), the
  window summed in float32 in row order, divided by the count, then
  nearbyint(fl32(fl32(sum / count) / y_scale) + y_zp), saturated.
- Add, fused (QLinearAdd, SSE2/AVX2 path): nearbyint(fl32(fl32(F + fl32(a * ra)) + fl32(b * rb)))
  with ra = fl32(a_scale / y_scale), rb = fl32(b_scale / y_scale),
  F = fl32(y_zp - fl32(fl32(ra * a_zp) + fl32(rb * b_zp))), a and b the raw 8-bit values.
  Unfused (onnxruntime keeps DequantizeLinear -> Add -> QuantizeLinear in float32, see
  qis.tools.qem.fusion): rint(fl32(fl32(dq(a) + dq(b)) / y_scale)) + y_zp, saturated.
- DequantizeLinear -> QuantizeLinear (a rescale): fl32(fl32(x_scale * (x - zp)) / y_scale),
  round half to even, + y_zp, saturate: a 256-entry table.
- A MatMul/Gemm/Conv onnxruntime leaves in float32 (see fusion): on the dequantized values,
  s = fma(x, w, s) over the taps in order from 0 (a Conv's as (ci, ky, kx), padding
  skipped), then s + bias, then QuantizeLinear. The integer result equals it except near
  a rounding tie; kernels.requant marks values within a derived bound of one
  (fc_tie_lsb) and floatfix.floatfix recomputes them exactly.

The float sums of AveragePool and Add are emulated exactly by kernels.fsum on "packed"
float32 values; what follows the sum (divide, quantize, round, clamp) is a monotonic map
from the sum to the output, so it becomes a sorted table of thresholds (kernels.rank).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

F32 = np.float32
# kernels.fsum: packed float = (t << 25) | (sign << 24) | m, value m * 2**(t - offset).
T_MAX = 47
KEY_BIAS = 1 << 29
KEY_ABOVE = 49 << 23  # above every key fsum can return


def requant_params(mult: np.float32) -> tuple[int, int]:
    """(M, S) with mult == M * 2**-S exactly, M in [2**23, 2**24).

    A multiplier below 2**-25 (a dead channel: its weight scale is ~0) maps every
    |acc| < 2**31 to 0 only if it is tiny enough; it is stored as (0, 1), which gives 0.
    """
    m = float(F32(mult))
    if not m > 0 or not math.isfinite(m):
        raise ValueError("requantization multiplier must be positive and finite, got %r" % m)
    if m < 2.0**-40:
        return 0, 1
    mant, exp = math.frexp(m)
    big = int(mant * (1 << 24))
    shift = 24 - exp
    if not 1 <= shift <= 64:
        raise ValueError("requantization multiplier %r out of range" % m)
    return big, shift


def conv_multiplier(x_scale, w_scale, y_scale) -> np.float32:
    """fl32(fl32(x_scale * w_scale) / y_scale): MLAS's per-channel output scale."""
    return F32(F32(F32(x_scale) * F32(w_scale)) / F32(y_scale))


def gap_multiplier(x_scale, y_scale, count: int) -> np.float32:
    """fl32(x_scale / fl32(y_scale * N)): MlasQLinearGlobalAveragePool's scale."""
    return F32(F32(x_scale) / F32(F32(y_scale) * F32(count)))


def qrange(signed: bool) -> tuple[int, int]:
    return (-128, 127) if signed else (0, 255)


def stored(signed: bool, q: int) -> int:
    """The kernels' stored byte of an 8-bit value (int8 biased by +128)."""
    return q + 128 if signed else q


def raw_values(signed: bool) -> np.ndarray:
    """The 8-bit value of each stored byte 0..255."""
    return np.arange(256) - (128 if signed else 0)


def clamp_range(signed: bool, scale: float, zp: int, lo: float, hi: float) -> tuple[int, int]:
    """The output range of a quantized value clamped to [lo, hi] in float (Relu/Clip)."""
    qmin, qmax = qrange(signed)
    if lo > -math.inf:
        qmin = max(qmin, int(np.clip(np.rint(F32(lo) / F32(scale)) + zp, qmin, qmax)))
    if hi < math.inf:
        qmax = min(qmax, int(np.clip(np.rint(F32(hi) / F32(scale)) + zp, qmin, qmax)))
    return qmin, qmax


def rescale_table(x_signed: bool, x_scale, x_zp: int, y_signed: bool, y_scale, y_zp: int,
                  qmin: int, qmax: int) -> list[int]:
    """DequantizeLinear then QuantizeLinear of every stored byte: the stored output byte."""
    deq = (F32(x_scale) * (raw_values(x_signed) - x_zp).astype(F32)).astype(F32)
    q = np.rint((deq / F32(y_scale)).astype(F32)).astype(np.int64) + y_zp
    return [stored(y_signed, int(v)) for v in np.clip(q, qmin, qmax)]


# --- packed float32 values and ordering keys (kernels.fsum, kernels.rank) ---


def _exponent(v: np.ndarray) -> np.ndarray:
    """e with |v| = m * 2**e, m in [2**23, 2**24) (v nonzero, normal float32)."""
    return (v.view(np.uint32).astype(np.int64) >> 23 & 0xFF) - 150


def pack(values: np.ndarray, offset: int, flush_below: float = 0.0) -> list[int]:
    """Packed words of float32 values; |v| < flush_below packs as 0 (the caller proves a
    flushed value cannot change the result). Raises ValueError when a value does not fit."""
    v = np.asarray(values, F32)
    bits = v.view(np.uint32).astype(np.int64)
    out = []
    for val, b, e in zip(v, bits, _exponent(v)):
        if val == 0 or abs(float(val)) < flush_below:
            out.append(0)
            continue
        t = int(e) + offset
        if not 1 <= t <= T_MAX or (b >> 23 & 0xFF) == 0:
            raise ValueError("float %r does not fit the packed range (offset %d)" % (float(val), offset))
        out.append((t << 25) | (int(b >> 31) << 24) | int((b & 0x7FFFFF) | 0x800000))
    return out


def key(value: float, offset: int) -> int:
    """kernels.fsum's ordering key of a float32 value (clamped outside the packed range)."""
    v = F32(value)
    if v == 0:
        return 0
    t = int(_exponent(np.array([v]))[0]) + offset
    m = int(np.array([v]).view(np.uint32)[0] & 0x7FFFFF) | 0x800000
    k = 1 if t < 1 else KEY_ABOVE if t > T_MAX else t * (1 << 23) + m
    return -k if v < 0 else k


def _ordered(v: np.ndarray) -> np.ndarray:
    b = v.view(np.uint32).astype(np.int64)
    return np.where(b >= 1 << 31, -(b & 0x7FFFFFFF), b)


def _from_ordered(o: np.ndarray) -> np.ndarray:
    b = np.where(o < 0, (-o) | (1 << 31), o).astype(np.uint32)
    return b.view(F32)


def thresholds(g: Callable[[np.ndarray], np.ndarray], qmin: int, qmax: int) -> list[float]:
    """For a non-decreasing map g from float32 to int, the smallest float32 T_q with
    g(T_q) >= q, for q = qmin+1 .. qmax (bisection over all float32 values in order)."""
    qs = np.arange(qmin + 1, qmax + 1)
    lo = np.full(len(qs), -0x7F800000, np.int64)  # -inf: g >= q is false there
    hi = np.full(len(qs), 0x7F800000, np.int64)  # +inf: true there
    while (hi - lo > 1).any():
        mid = (lo + hi) // 2
        ok = g(_from_ordered(mid)) >= qs
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    return [float(v) for v in _from_ordered(hi)]


def threshold_words(values: list[float], offset: int) -> list[int]:
    """Thresholds as kernels.rank reads them: keys biased by 2**29."""
    return [key(v, offset) + KEY_BIAS for v in values]


def _offset(smallest: float, largest: float, what: str) -> int:
    """The packed-float offset that puts `smallest` at t = 1; `largest` must fit t <= 47."""
    offset = 1 - int(_exponent(np.array([F32(smallest)]))[0])
    if int(_exponent(np.array([F32(largest)]))[0]) + offset > T_MAX:
        raise ValueError("%s: the values span more than 2**23 times the smallest one that matters" % what)
    return offset


def add_tables(a_signed: bool, a_scale, a_zp: int, b_signed: bool, b_scale, b_zp: int, y_scale, y_zp: int,
               qmin: int, qmax: int, float_path: bool) -> tuple[list[int], list[int], list[int]]:
    """kernels.addf's tables: packed A[256], B[256] and thresholds on their float32 sum.

    QLinearAdd (see above) sums in output units; the float path (DequantizeLinear -> Add
    -> QuantizeLinear) sums the dequantized values and quantizes: rint(fl32(v / y_scale))
    + y_zp. An addend below 2**-26 output units is flushed to 0: it is absorbed by any
    addend above 1/4 unit, and a sum below 1/2 unit rounds to 0 either way.
    """
    a_raw = raw_values(a_signed).astype(F32)
    b_raw = raw_values(b_signed).astype(F32)
    if float_path:
        ta = (F32(a_scale) * (a_raw - F32(a_zp))).astype(F32)
        tb = (F32(b_scale) * (b_raw - F32(b_zp))).astype(F32)
        unit = float(F32(y_scale))

        def quantize(v: np.ndarray) -> np.ndarray:
            return np.clip(np.rint((v / F32(y_scale)).astype(F32)) + y_zp, qmin, qmax)
    else:
        ra = F32(F32(a_scale) / F32(y_scale))
        rb = F32(F32(b_scale) / F32(y_scale))
        fixed = F32(F32(y_zp) - F32(F32(ra * F32(a_zp)) + F32(rb * F32(b_zp))))
        ta = (fixed + (a_raw * ra).astype(F32)).astype(F32)
        tb = (b_raw * rb).astype(F32)
        unit = 1.0

        def quantize(v: np.ndarray) -> np.ndarray:
            return np.clip(np.rint(v), qmin, qmax)
    flush = unit * 2.0**-26
    largest = 2 * max(float(np.abs(ta).max()), float(np.abs(tb).max()), unit)
    offset = _offset(flush, largest, "the scales of this Add")
    return (pack(ta, offset, flush), pack(tb, offset, flush),
            threshold_words(thresholds(quantize, qmin, qmax), offset))


def avgpool_tables(x_signed: bool, x_scale, x_zp: int, y_scale, y_zp: int, count: int,
                   max_window: int, qmin: int, qmax: int) -> tuple[list[int], list[int]]:
    """kernels.avgpool's tables: packed dequantized values D[256] and thresholds.

    Offset: every nonzero D has e >= e0 (the exponent of x_scale) and every sum is a
    multiple of 2**e0, so t = e - e0 + 24 >= 1; the largest sum, below
    256 * max_window * x_scale, must keep t <= 47.
    """
    d = (F32(x_scale) * (raw_values(x_signed) - x_zp).astype(F32)).astype(F32)
    e0 = int(_exponent(np.array([F32(x_scale)]))[0])
    offset = 24 - e0
    if int(_exponent(np.array([F32(x_scale) * F32(256 * max_window)]))[0]) + offset > T_MAX:
        raise ValueError("window of %d values too large for the float32 emulation" % max_window)

    def quantize(total: np.ndarray) -> np.ndarray:
        avg = (total / F32(count)).astype(F32)
        q = np.rint(((avg / F32(y_scale)).astype(F32) + F32(y_zp)).astype(F32))
        return np.clip(q, qmin, qmax)

    return pack(d, offset), threshold_words(thresholds(quantize, qmin, qmax), offset)


# --- a MatMul/Gemm/Conv that onnxruntime runs in float32 (kernels.requant marks, floatfix.floatfix) ---

U = 2.0**-24  # float32 unit roundoff
FAST_MARGIN = 72  # kernels.requant's own uncertainty, in units of its v


def fc_tie_lsb(k: int, x_scale, w_nk: np.ndarray, wzp: np.ndarray, w_scale: np.ndarray,
               bias: np.ndarray | None, bias_scale: np.ndarray | None, y_scale) -> list[float]:
    """Per output channel, a bound (in output LSB) on |float path - integer path| before
    rounding: the float path (dequantized products, an FMA chain of K steps, the bias, the
    division by y_scale) and the integer path (fl32(acc) * fl32(fl32(xs * ws) / ys)) are each
    within (K + 1) * 2**-24 plus a few units of 2**-24 (relative to the largest sum any 8-bit
    input can make) of the exact value (xs * ws * acc + bias) / ys; K + 8 covers both."""
    n = w_nk.shape[0]
    xs = float(F32(x_scale))
    ws = np.broadcast_to(np.asarray(w_scale, np.float64).reshape(-1), (n,))
    wz = np.broadcast_to(np.asarray(wzp, np.int64).reshape(-1), (n,))
    spread = 255.0 * xs * ws * np.abs(w_nk.astype(np.int64) - wz[:, None]).sum(axis=1)
    out = []
    for c in range(n):
        b = 0.0 if bias is None else float(np.asarray(bias).reshape(-1)[c])
        sb = 0.0 if bias_scale is None else float(np.broadcast_to(np.asarray(bias_scale).reshape(-1), (n,))[c])
        mismatch = abs(sb - float(F32(F32(xs) * F32(ws[c])))) * abs(b)
        out.append(((k + 8) * U * (spread[c] + abs(sb * b) + abs(xs * ws[c] * b)) + mismatch) / float(F32(y_scale)))
    return out


def tie_window(tie_lsb: float, mult: int, shift: int, max_acc: int) -> int:
    """kernels.requant's marking window, in units of its v = P / 2**12: within this of a tie.
    0 for a channel whose values stay below half an LSB for every input (a dead or nearly
    dead channel: max |acc| * multiplier + the float error < 1/2): both paths give 0."""
    if max_acc * mult * 2.0**-shift + tie_lsb < 0.5:
        return 0
    units = tie_lsb * 2.0 ** (shift - 12)
    return int(min(FAST_MARGIN + math.ceil(units) + 1, 1 << 30))


def _pack_span(values: np.ndarray, what: str) -> tuple[list[int], int]:
    """Packed words of float32 values with the offset that puts the smallest nonzero at t = 1."""
    nonzero = np.abs(values[values != 0])
    if not nonzero.size:
        return [0] * len(values), 1
    offset = _offset(float(nonzero.min()), float(nonzero.max()), what)
    return pack(values, offset), offset


def floatfix_tables(x_signed: bool, x_scale, x_zp: int, w_nk: np.ndarray, wzp: np.ndarray, w_scale: np.ndarray,
                    bias: np.ndarray | None, bias_scale: np.ndarray | None, y_scale, y_zp: int,
                    qmin: int, qmax: int, geometry: list[int]) -> list[int]:
    """floatfix.floatfix's parameters after M K N q0: nthr ox 0 ob o1 ov, scratch, the
    geometry (16 words and the conv flag), X, W, B, the offsets of W's rows, ONE, thresholds."""
    n, k = w_nk.shape
    x_deq = (F32(x_scale) * (raw_values(x_signed) - x_zp).astype(F32)).astype(F32)
    ws = np.broadcast_to(np.asarray(w_scale, F32).reshape(-1), (n,))
    wz = np.broadcast_to(np.asarray(wzp, np.int64).reshape(-1), (n,))
    w_deq = (ws[:, None] * (w_nk.astype(np.int64) - wz[:, None]).astype(F32)).astype(F32).reshape(-1)
    if bias is None:
        b_deq = np.zeros(n, F32)
    else:
        sb = np.broadcast_to(np.asarray(bias_scale, F32).reshape(-1), (n,))
        b_deq = (sb * np.asarray(bias).reshape(-1).astype(F32)).astype(F32)
    xt, ox = _pack_span(x_deq, "dequantized inputs")
    rows = [_pack_span(w_deq[c * k:(c + 1) * k], "dequantized weights") for c in range(n)]  # per channel
    wt = [word for words, _ in rows for word in words]
    bt, ob = _pack_span(b_deq, "dequantized biases")
    ov = 24 - int(_exponent(np.array([F32(y_scale)]))[0])

    def quantize(v: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((v / F32(y_scale)).astype(F32)) + y_zp, qmin, qmax)

    thr = threshold_words(thresholds(quantize, qmin, qmax), ov)
    one = (1 << 25) | 0x800000  # 1.0 with offset 24
    return [len(thr), ox, 0, ob, 24, ov] + [0] * 11 + geometry + xt + wt + bt + [off for _, off in rows] + [one] + thr
