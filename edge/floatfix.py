# onnxruntime's float32 MatMul/Gemm/Conv, for the few outputs where it can round
# differently from the integer kernels (see floatfix). edge/model.py imports this module
# only for a model that has such a layer.
#
# Rules of this module: those of edge/kernels.py (stateless, caller-owned buffers, every
# intermediate within a signed 32-bit word, no literal above 2**30); the float state and
# limbs live in the op's parameter block, so nothing is allocated.
from .compat import micropython, ptr8, ptr32
from .float32 import rank


@micropython.viper
def floatfix(x: ptr8, acc: ptr32, y: ptr8, params) -> int:
    """Recompute, in onnxruntime's float32, the outputs of a MatMul/Gemm/Conv that
    onnxruntime runs in float32 (a QDQ group it leaves unfused) and that requant() marked as
    near a rounding tie (acc[i] set to -2**31, which no accumulator reaches). onnxruntime's
    float path: s = fma(X[x], W[tap], s) over the taps in order (a Conv's as (ci, ky, kx),
    padding skipped) from s = 0, one rounding per step, then s + B[n], then quantized; X, W,
    B are the dequantized float32 values, packed. Elsewhere the integer result equals it.

    p: M K N q0 nthr ox 0 ob o1 ov, 3 state words, 8 limb words, then the geometry
    Cin H W Cout OH OW KH KW SH SW DH DW PT PL G conv (conv 0: M rows of K inputs, N
    outputs each), X[256], W[N*K], B[N], OW[N], ONE, thresholds[nthr]. ox/ob/o1 are the
    packing offsets of X, B and ONE (1.0), OW[n] that of W's row n, ov that of the keys.
    """
    p = ptr32(params)
    m = int(p[0])
    k = int(p[1])
    n = int(p[2])
    q0 = int(p[3])
    nthr = int(p[4])
    ox = int(p[5])
    ob = int(p[7])
    o1 = int(p[8])
    ov = int(p[9])
    h = int(p[22])
    wd = int(p[23])
    oh = int(p[25])
    ow = int(p[26])
    kh = int(p[27])
    kw = int(p[28])
    conv = int(p[37])
    cig = int(p[21]) // int(p[35])
    cog = n // int(p[35])
    ohw = oh * ow
    xt = 38
    wt = xt + 256
    bt = wt + n * k
    offs = bt + n
    one = int(p[offs + n])
    thr = offs + n + 1
    mark = 0 - 0x20000000
    mark = mark * 4
    lift = 0x10000
    fixed = 0
    total = m * n
    if conv:
        total = n * ohw
    for i in range(total):
        a = int(acc[i])
        if (a >> 31) == 1:
            a -= lift * lift
        if a != mark:
            continue
        c = i % n
        if conv:
            c = i // ohw
        p[10] = 0  # s = 0
        p[11] = 4096
        p[12] = 0
        wi = wt + c * k
        wo = int(p[offs + c])
        if conv:
            oy = (i % ohw) // ow
            ox_ = i % ow
            xg = (c // cog) * cig * h * wd
            for ci in range(cig):
                for ky in range(kh):
                    iy = oy * int(p[29]) + ky * int(p[31]) - int(p[33])
                    for kx in range(kw):
                        ix = ox_ * int(p[30]) + kx * int(p[32]) - int(p[34])
                        if iy >= 0 and iy < h and ix >= 0 and ix < wd:
                            _fma(params, int(p[xt + int(x[xg + (ci * h + iy) * wd + ix])]), ox, int(p[wi]), wo)
                        wi += 1
        else:
            xi = (i // n) * k
            for j in range(k):
                _fma(params, int(p[xt + int(x[xi])]), ox, int(p[wi]), wo)
                xi += 1
                wi += 1
        _fma(params, int(p[bt + c]), ob, one, o1)
        y[i] = q0 + int(rank(int(_key(params, ov)), params, thr, nthr))
        fixed += 1
    return fixed


@micropython.viper
def _key(params, ov: int) -> int:
    """The ordering key (see fsum) of the state float with packing offset ov."""
    p = ptr32(params)
    ms = int(p[12])
    if ms == 0:
        return 0
    t = int(p[11]) - 4096 + ov
    kk = 1
    if t > 47:
        kk = 49 * 0x800000
    elif t >= 1:
        kk = t * 0x800000 + ms
    if int(p[10]):
        return 0 - kk
    return kk


@micropython.viper
def _fma(params, wa: int, oa: int, wb: int, ob: int) -> int:
    """state = round_to_nearest_even(a * b + state) in float32, once (a fused multiply-add),
    a and b packed floats with offsets oa, ob; the state is p[10..12] = sign, exponent + 4096,
    mantissa (value m * 2**e, m in [2**23, 2**24) or 0). Exact: P = ma * mb is formed in
    24-bit limbs from 12-bit halves (every product < 2**24), P and the state are placed in
    four 24-bit limbs (p[13..20]) aligned to the lower exponent, added or subtracted with
    carries, and the top 24 bits rounded half to even; an addend far below the other's
    last bit only breaks ties (it cannot move a rounding otherwise). All words < 2**26.
    """
    p = ptr32(params)
    ma = wa & 0xFFFFFF
    mb = wb & 0xFFFFFF
    if ma == 0 or mb == 0:
        return 0
    sp = ((wa >> 24) ^ (wb >> 24)) & 1
    ep = (wa >> 25) - oa + (wb >> 25) - ob
    ah = ma >> 12
    al = ma & 0xFFF
    bh = mb >> 12
    bl = mb & 0xFFF
    mid = ah * bl + al * bh
    pl = al * bl + ((mid & 0xFFF) << 12)
    ph = ah * bh + (mid >> 12) + (pl >> 24)
    pl &= 0xFFFFFF
    ss = int(p[10])
    es = int(p[11]) - 4096
    ms = int(p[12])
    if ms != 0 and es >= ep + 51:  # the product is below a quarter ulp of the state
        return 0
    la = 13
    lb = 17
    for j in range(8):
        p[la + j] = 0
    tiny = 0  # the state, far below the product's last bit: a sign that only breaks ties
    e0 = ep
    if ms == 0:
        p[la] = pl
        p[la + 1] = ph
    elif es <= ep - 26:
        p[la] = pl
        p[la + 1] = ph
        tiny = 1
        if ss != sp:
            tiny = 0 - 1
    else:
        e0 = ep
        if es < ep:
            e0 = es
        # place P (two limbs) at shift ep - e0 and the state (one limb) at es - e0
        sh = ep - e0
        q = sh // 24
        rr = sh - 24 * q
        for h in range(2):
            v = pl
            if h:
                v = ph
            p[la + q + h] = int(p[la + q + h]) + ((v & ((1 << (24 - rr)) - 1)) << rr)
            if rr:
                p[la + q + h + 1] = int(p[la + q + h + 1]) + (v >> (24 - rr))
        sh = es - e0
        q = sh // 24
        rr = sh - 24 * q
        p[lb + q] = (ms & ((1 << (24 - rr)) - 1)) << rr
        if rr:
            p[lb + q + 1] = ms >> (24 - rr)
        if ss == sp:
            carry = 0
            for j in range(4):
                v = int(p[la + j]) + int(p[lb + j]) + carry
                carry = v >> 24
                p[la + j] = v & 0xFFFFFF
        else:
            big = 0  # is the state's magnitude the larger?
            j = 3
            while j >= 0:
                va = int(p[la + j])
                vb = int(p[lb + j])
                if va != vb:
                    if vb > va:
                        big = 1
                    break
                j -= 1
            if j < 0:  # equal magnitudes: an exact zero
                p[12] = 0
                return 0
            hi = la
            lo = lb
            if big:
                hi = lb
                lo = la
                sp = ss
            borrow = 0
            for j in range(4):
                v = int(p[hi + j]) - int(p[lo + j]) - borrow
                borrow = 0
                if v < 0:
                    v += 0x1000000
                    borrow = 1
                p[la + j] = v
    # the top bit of the sum
    top = 3
    while top > 0 and int(p[la + top]) == 0:
        top -= 1
    v = int(p[la + top])
    nb = 0
    while v:
        v >>= 1
        nb += 1
    tb = 24 * top + nb - 1
    pos = tb - 23  # the mantissa's last bit
    if pos <= 0:  # fits 24 bits (so in the lowest limb): exact
        mant = int(p[la]) << (0 - pos)
        p[10] = sp
        p[11] = e0 + pos + 4096
        p[12] = mant
        return 0
    qi = pos // 24
    rr = pos - 24 * qi
    mant = int(p[la + qi]) >> rr
    if rr:
        mant |= (int(p[la + qi + 1]) & ((1 << rr) - 1)) << (24 - rr)
    rb = pos - 1  # the round bit, then the sticky bits below it
    rq = rb // 24
    rbit = (int(p[la + rq]) >> (rb - 24 * rq)) & 1
    sticky = int(p[la + rq]) & ((1 << (rb - 24 * rq)) - 1)
    for j in range(rq):
        sticky |= int(p[la + j])
    up = 0
    if rbit:  # above the half, or at it: to even, unless a tiny addend breaks the tie
        if sticky or tiny > 0:
            up = 1
        elif tiny == 0 and (mant & 1):
            up = 1
    if up:
        mant += 1
        if mant == 0x1000000:
            mant = 0x800000
            pos += 1
    p[10] = sp
    p[11] = e0 + pos + 4096
    p[12] = mant
    return 0
