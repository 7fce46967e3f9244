# Exact float32 arithmetic in 32-bit integers: the kernels of the ops that onnxruntime
# computes in float32 (QLinearAdd, QLinearAveragePool, a DequantizeLinear -> Add ->
# QuantizeLinear left unfused), bit for bit; edge/floatfix.py does the same for a float
# MatMul/Gemm/Conv. edge/model.py imports this module only for a
# model that uses them (its viper code costs heap at import).
#
# Rules of this module: the same as edge/kernels.py (stateless, caller-owned buffers,
# every intermediate within a signed 32-bit word, no literal above 2**30). A float32 value
# is "packed" into one int32 word by the compiler (qis.tools.qem.numerics); fsum adds
# packed values left to right as float32 does, and returns an ordering key; what follows
# the sum in onnxruntime (divide, quantize, round, saturate) is a monotonic map, which the
# compiler turns into sorted thresholds that rank() searches.
# Bounds: mantissas < 2**24, with 3 guard bits < 2**27, sums < 2**28; keys |k| < 49 * 2**23
# < 2**29 and thresholds are stored biased by 2**29, below 2**30.
from .compat import micropython, ptr8, ptr32


@micropython.viper
def fsum(words: ptr32, start: int, count: int) -> int:
    """The ordering key of the float32 sum of `count` packed floats, added left to right
    with IEEE round to nearest even (what a float32 loop in onnxruntime computes).

    A packed float is (t << 25) | (sign << 24) | m: value = +-m * 2**(t - offset) with m
    in [2**23, 2**24) and 1 <= t <= 47 (0 is the word 0); the offset is the compiler's.
    The key orders values like the floats: 0 for 0, +-(t * 2**23 + m) else, and +-1 for a
    nonzero sum below the smallest stored exponent (the compiler places every threshold
    away from those). All intermediates: A, B < 2**27, S < 2**28, |key| < 49 * 2**23.
    """
    sa = 0
    ta = 0
    ma = 0
    i = start
    end = start + count
    while i < end:
        wb = int(words[i])
        i += 1
        mb = wb & 0xFFFFFF
        if mb == 0:
            continue
        sb = (wb >> 24) & 1
        tb = wb >> 25
        if ma == 0:
            sa = sb
            ta = tb
            ma = mb
            continue
        if tb > ta or (tb == ta and mb > ma):  # a: the larger magnitude
            u = sa
            sa = sb
            sb = u
            u = ta
            ta = tb
            tb = u
            u = ma
            ma = mb
            mb = u
        d = ta - tb
        if d >= 26:  # |b| < ulp(a) / 4: absorbed
            continue
        aa = ma << 3
        bb = mb << 3
        if d > 0:
            lost = bb & ((1 << d) - 1)
            bb >>= d
            if lost:
                bb |= 1
        if sa == sb:
            s = aa + bb
        else:
            s = aa - bb
        if s == 0:
            ma = 0
            continue
        t = ta
        if s >= 0x8000000:
            s = (s >> 1) | (s & 1)
            t += 1
        while s < 0x4000000:
            s <<= 1
            t -= 1
        r = s & 7
        s >>= 3
        if r > 4 or (r == 4 and (s & 1)):
            s += 1
        if s == 0x1000000:
            s = 0x800000
            t += 1
        if t < 1:
            if sa:
                return -1
            return 1
        ta = t
        ma = s
    if ma == 0:
        return 0
    if sa:
        return 0 - (ta * 0x800000 + ma)
    return ta * 0x800000 + ma


@micropython.viper
def rank(key: int, p: ptr32, start: int, count: int) -> int:
    """How many of the ascending thresholds p[start:start+count] are <= key (binary search).

    Thresholds are ordering keys (see fsum) stored biased by 2**29, so every word is a
    positive int32 below 2**30.
    """
    kb = key + 0x20000000
    lo = 0
    hi = count
    while lo < hi:
        mid = (lo + hi) >> 1
        if int(p[start + mid]) <= kb:
            lo = mid + 1
        else:
            hi = mid
    return lo


@micropython.viper
def addf(a: ptr8, b: ptr8, y: ptr8, params) -> int:
    """y = q0 + rank(fsum(A[a] + B[b])): onnxruntime's QLinearAdd, elementwise; an operand
    smaller than the output repeats (a bias vector along the last axis).

    p: n na nb q0 nthr, A[256], B[256], thresholds[nthr], 2 words of scratch; A and B are
    packed floats of each stored byte (the compiler folds scales and zero points in).
    fsum and rank get the array object, not the pointer: a pointer passed to a function
    becomes an int, a heap object when the address is above 2**30 on a 32-bit port.
    """
    p = ptr32(params)
    n = int(p[0])
    na = int(p[1])
    nb = int(p[2])
    q0 = int(p[3])
    nthr = int(p[4])
    scratch = 517 + nthr
    ia = 0
    ib = 0
    for i in range(n):
        p[scratch] = p[5 + int(a[ia])]
        p[scratch + 1] = p[261 + int(b[ib])]
        ia += 1
        if ia == na:
            ia = 0
        ib += 1
        if ib == nb:
            ib = 0
        y[i] = q0 + int(rank(int(fsum(params, scratch, 2)), params, 517, nthr))
    return n


@micropython.viper
def avgpool(x: ptr8, y: ptr8, params, unused: int) -> int:
    """y = q0 + rank(fsum(window of D[x])): onnxruntime's QLinearAveragePool, which
    dequantizes to float32, sums each window in row order, divides and quantizes (the
    compiler turns divide-and-quantize into thresholds).

    p: C H W OH OW KH KW SH SW PT PL q0 nthr, D[256], thresholds[nthr], KH*KW scratch.
    Padding is skipped (count_include_pad only changes the divisor, in the thresholds).
    """
    p = ptr32(params)
    c = int(p[0])
    h = int(p[1])
    wd = int(p[2])
    oh = int(p[3])
    ow = int(p[4])
    kh = int(p[5])
    kw = int(p[6])
    sh = int(p[7])
    sw = int(p[8])
    pt = int(p[9])
    pl = int(p[10])
    q0 = int(p[11])
    nthr = int(p[12])
    thr = 269
    scratch = 269 + nthr
    o = 0
    for ch in range(c):
        base = ch * h * wd
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                k = scratch
                for ky in range(kh):
                    iy = iy0 + ky
                    if iy >= 0 and iy < h:
                        for kx in range(kw):
                            ix = ix0 + kx
                            if ix >= 0 and ix < wd:
                                p[k] = p[13 + int(x[base + iy * wd + ix])]
                                k += 1
                y[o] = q0 + int(rank(int(fsum(params, scratch, k - scratch)), params, thr, nthr))
                o += 1
    return o
