# Integer hot loops of the edge model runtime (edge/model.py runs them in plan order).
#
# Rules of this module:
# - Stateless: every kernel takes (a, b, c, d) and writes its result into a caller-owned
#   buffer; nothing is allocated per call, nothing is returned but a small int.
# - 8-bit activations and weights are bytes in a "stored" form: uint8 values as they are,
#   int8 values biased by +128 (stored = q ^ 0x80). A zero point given in a parameter
#   block is in the same stored form, so (stored - zp) is always the true integer.
# - 32-bit data (accumulators, parameter blocks) are array('i') objects.
# - Every kernel is written once. On MicroPython it is compiled with @micropython.viper
#   (machine-word ints); on CPython the decorator is the identity and the same source runs
#   as plain Python. tests/interop/test_kernels_32bit.py runs this very source with 32-bit
#   machine words.
#
# 32-bit machine words (ESP32, RP2040, any Cortex-M): every intermediate of every kernel
# fits a signed 32-bit word for all 8-bit inputs and every parameter the compiler emits.
# The bounds, with X = max|x - xz| <= 255 and W = max|w - wz| <= 255:
# - conv/fc accumulators: |acc| <= |bias| + X * sum|w - wz| per output channel; the
#   compiler computes this sum exactly and refuses a layer where it reaches 2**31 (fc
#   also checks its folded partial sums, see fc()).
# - requant: the fast path multiplies |acc| < 2**19 by 12-bit halves of the 24-bit
#   multiplier (products and their sum < 2**31); requant_exact() first rounds |acc| < 2**31
#   to 24 significant bits (as float32 does), so every partial product is below 2**24 and
#   every sum below 2**26 (derivations on both).
# - The float32 paths of onnxruntime are emulated in edge/float32.py (Add, AveragePool)
#   and edge/floatfix.py (MatMul/Gemm/Conv near a tie), which state their own bounds; a
#   model without those ops never imports them.
# - Constants: viper loads any literal above 2**30 as an object on a 32-bit port, so none
#   appears; MicroPython's small ints are 31-bit there, and a viper function returns only
#   small ints (counts, keys below 2**29) so that returning never allocates.
# - A viper ptr32 load is zero-extended on a 64-bit port and sign-extended on a 32-bit
#   one. Signed words are read as `v = int(p[i])` then
#   `if (v >> 31) == 1: v -= lift * lift` with the local `lift = 0x10000`: only a
#   zero-extended negative word has bit 31 set and nothing above it, so the branch runs on
#   64-bit ports only and never on a 32-bit word. (A literal 1 << 32 would be folded into
#   a long-int object by mpy-cross, which viper cannot add to a machine word.)
#
# Numerics: every kernel reproduces onnxruntime's CPU kernels bit for bit (the compiler
# names the onnxruntime path behind each op in qis.tools.qem.numerics).
from .compat import micropython, ptr8, ptr32


@micropython.viper
def conv(x: ptr8, w: ptr8, acc: ptr32, ctx) -> int:
    """acc[Cout,OH,OW] = sum (x - xz) * (w - wz) + bias: 2-D (1-D: H = 1) grouped conv.

    ctx = (p, col): p is Cin H W Cout OH OW KH KW SH SW DH DW PT PL G xz, c[Cout], wz[Cout],
    then OW words of scratch; col a bytearray of OW * K bytes, K = Cin/G * KH * KW (both
    made once by edge/model.py). x is [Cin,H,W] stored bytes, w [Cout,Cin/G,KH,KW] stored
    bytes; c[oc] = bias - xz * sum w[oc] + K * xz * wz[oc] (folded by the compiler), so with
    padding read as xz, acc = c + sum x * w - wz * sum x over the K taps.
    Two loop orders: with several filters per group, the windows of an output row are
    gathered once into col (padding as xz, their sums into p's scratch) and every filter
    of the group is dotted with them, 8 or 4 taps per step; a depthwise conv (one filter
    per group) or one of fewer than 8 taps walks each weight tap along the output row
    instead: acc starts at c and each tap adds x * (w - wz) along the row, 4 outputs per
    step, or xz * (w - wz) where the tap reads padding. Returns MACs.
    32 bits: |acc| is bounded by the compiler (|bias| + 255 * sum|w - wz| < 2**31); the
    folded partial sums c + dot - wz * sum x likewise (K * 2 * 255**2 + |c| < 2**31).
    """
    params = ctx[0]
    p = ptr32(params)
    col = ptr8(ctx[1])
    cin = int(p[0])
    h = int(p[1])
    wd = int(p[2])
    cout = int(p[3])
    oh = int(p[4])
    ow = int(p[5])
    kh = int(p[6])
    kw = int(p[7])
    sh = int(p[8])
    sw = int(p[9])
    dh = int(p[10])
    dw = int(p[11])
    pt = int(p[12])
    pl = int(p[13])
    groups = int(p[14])
    xz = int(p[15])
    lift = 0x10000
    cig = cin // groups
    cog = cout // groups
    k = cig * kh * kw
    hw = h * wd
    ohw = oh * ow
    sums = 16 + 2 * cout  # the window sums of the row, in p's scratch
    if cog == 1 or k < 8:  # depthwise, or too few taps for a long dot: walk the rows
        wi = 0
        for oc in range(cout):
            b = int(p[16 + oc])
            if (b >> 31) == 1:
                b -= lift * lift
            wz = int(p[16 + cout + oc])
            ob = oc * ohw
            for i in range(ohw):
                acc[ob + i] = b
            xg = (oc // cog) * cig * hw
            for ci in range(cig):
                xc = xg + ci * hw
                for ky in range(kh):
                    dy = ky * dh - pt
                    for kx in range(kw):
                        wv = int(w[wi]) - wz
                        xzw = xz * wv
                        wi += 1
                        dx = kx * dw - pl
                        ox0 = 0
                        if dx < 0:
                            ox0 = (sw - 1 - dx) // sw
                        ox1 = 0
                        if wd - 1 - dx >= 0:
                            ox1 = (wd - 1 - dx) // sw + 1
                        if ox1 > ow:
                            ox1 = ow
                        if ox1 < ox0:
                            ox1 = ox0
                        for oy in range(oh):
                            iy = oy * sh + dy
                            o = ob + oy * ow
                            oe = o + ow
                            if iy < 0 or iy >= h:  # the whole row reads padding
                                while o < oe:
                                    acc[o] += xzw
                                    o += 1
                                continue
                            om = o + ox0
                            while o < om:  # left padding
                                acc[o] += xzw
                                o += 1
                            xi = xc + iy * wd + ox0 * sw + dx
                            om = ob + oy * ow + ox1
                            while o + 3 < om:
                                acc[o] += int(x[xi]) * wv
                                acc[o + 1] += int(x[xi + sw]) * wv
                                acc[o + 2] += int(x[xi + 2 * sw]) * wv
                                acc[o + 3] += int(x[xi + 3 * sw]) * wv
                                xi += 4 * sw
                                o += 4
                            while o < om:
                                acc[o] += int(x[xi]) * wv
                                xi += sw
                                o += 1
                            while o < oe:  # right padding
                                acc[o] += xzw
                                o += 1
        return cout * ohw * k
    for g in range(groups):
        xg = g * cig * hw
        for oy in range(oh):
            iy0 = oy * sh - pt
            j = 0
            for ox in range(ow):  # gather the row's windows (padding as xz) and their sums
                ix0 = ox * sw - pl
                sx = 0
                if iy0 >= 0 and iy0 + (kh - 1) * dh < h and ix0 >= 0 and ix0 + (kw - 1) * dw < wd:
                    for ci in range(cig):  # inside the input: no padding checks
                        xr = xg + ci * hw + iy0 * wd + ix0
                        for ky in range(kh):
                            xi = xr
                            je = j + kw
                            while j < je:
                                v = int(x[xi])
                                col[j] = v
                                sx += v
                                j += 1
                                xi += dw
                            xr += dh * wd
                else:
                    for ci in range(cig):
                        xc = xg + ci * hw
                        for ky in range(kh):
                            iy = iy0 + ky * dh
                            ix = ix0
                            for kx in range(kw):
                                v = xz
                                if iy >= 0 and iy < h and ix >= 0 and ix < wd:
                                    v = int(x[xc + iy * wd + ix])
                                col[j] = v
                                sx += v
                                j += 1
                                ix += dw
                p[sums + ox] = sx
            for oc in range(g * cog, g * cog + cog):
                b = int(p[16 + oc])
                if (b >> 31) == 1:
                    b -= lift * lift
                wz = int(p[16 + cout + oc])
                wo = oc * k
                o = oc * ohw + oy * ow
                j = 0
                for ox in range(ow):
                    s = 0
                    wi = wo
                    je = j + k - 7
                    while j < je:
                        s += int(col[j]) * int(w[wi]) + int(col[j + 1]) * int(w[wi + 1]) + \
                            int(col[j + 2]) * int(w[wi + 2]) + int(col[j + 3]) * int(w[wi + 3]) + \
                            int(col[j + 4]) * int(w[wi + 4]) + int(col[j + 5]) * int(w[wi + 5]) + \
                            int(col[j + 6]) * int(w[wi + 6]) + int(col[j + 7]) * int(w[wi + 7])
                        j += 8
                        wi += 8
                    je += 4
                    if j < je:
                        s += int(col[j]) * int(w[wi]) + int(col[j + 1]) * int(w[wi + 1]) + \
                            int(col[j + 2]) * int(w[wi + 2]) + int(col[j + 3]) * int(w[wi + 3])
                        j += 4
                        wi += 4
                    je += 3
                    while j < je:
                        s += int(col[j]) * int(w[wi])
                        j += 1
                        wi += 1
                    acc[o + ox] = b - wz * int(p[sums + ox]) + s
    return cout * ohw * k


@micropython.viper
def fc(x: ptr8, w: ptr8, acc: ptr32, p: ptr32) -> int:
    """acc[M,N] = sum_k (x[m,k] - xz) * (w[n,k] - wz[n]) + bias[n].

    p: M K N xz, c[N], wz[N] where c[n] = bias[n] - xz * sum_k w[n,k] + K * xz * wz[n]
    (folded by the compiler), so the hot loop is a bare dot product of stored bytes, 8 taps
    per step: acc = sum_k x * w - wz[n] * sum_k x + c[n]. 32 bits: the dot is at most
    K * 255**2, wz * sum x at most K * 255**2; the compiler checks K * 2 * 255**2 + |c| < 2**31.
    """
    m = int(p[0])
    k = int(p[1])
    n = int(p[2])
    lift = 0x10000
    o = 0
    for r in range(m):
        xo = r * k
        sx = 0
        for i in range(k):
            sx += int(x[xo + i])
        wi = 0
        for c in range(n):
            b = int(p[4 + c])
            if (b >> 31) == 1:
                b -= lift * lift
            s = 0
            xi = xo
            xe = xo + k - 7
            while xi < xe:
                s += int(x[xi]) * int(w[wi]) + int(x[xi + 1]) * int(w[wi + 1]) + \
                    int(x[xi + 2]) * int(w[wi + 2]) + int(x[xi + 3]) * int(w[wi + 3]) + \
                    int(x[xi + 4]) * int(w[wi + 4]) + int(x[xi + 5]) * int(w[wi + 5]) + \
                    int(x[xi + 6]) * int(w[wi + 6]) + int(x[xi + 7]) * int(w[wi + 7])
                xi += 8
                wi += 8
            xe = xo + k
            while xi < xe:
                s += int(x[xi]) * int(w[wi])
                xi += 1
                wi += 1
            acc[o] = b - int(p[4 + n + c]) * sx + s
            o += 1
    return m * n * k


@micropython.viper
def requant(acc: ptr32, y: ptr8, p: ptr32, n: int) -> int:
    """y[i] = sat(round_half_even(fl32(fl32(acc[i]) * M_c * 2**-S_c)) + yz) for n values.

    p: inner C yz lo hi tie, M[C], S[C], and with tie != 0 W[C]; channel c = (i // inner) % C;
    lo/hi in stored form. With tie, an accumulator whose v (below) lies within W[c] of a
    rounding tie, or that takes the slow path while W[c] > 0, is overwritten by -2**31 for
    floatfix.floatfix (onnxruntime computes that layer
    in float32, which may round the other way there). This is onnxruntime's MLAS requantization (float32 accumulator times a float32
    multiplier M * 2**-S, M its 24-bit mantissa), in 32-bit integers. Fast path, for
    |acc| < 2**19 and 8 <= S - 12 <= 30: v = floor(P / 2**12) with P = acc * M, formed
    from M's 12-bit halves (|acc * mh| and |acc * ml| < 2**31, |v| < 2**31); float32 rounds
    P by at most 2**18, so v is within 65 of fl32(P) / 2**12, and a v more than 72 away
    from a rounding tie rounds as fl32(P) does, whatever its sign (round to nearest is
    symmetric away from ties). Otherwise requant_exact() of |acc|.
    """
    inner = int(p[0])
    nc = int(p[1])
    yz = int(p[2])
    lo_q = int(p[3])
    hi_q = int(p[4])
    tie = int(p[5])
    lift = 0x10000
    mark = 0 - 0x20000000
    mark = mark * 4  # -2**31: no accumulator takes it (the compiler bounds |acc| < 2**31)
    i = 0
    while i < n:
        for c in range(nc):
            mul = int(p[6 + c])
            mh = mul >> 12
            ml = mul & 0xFFF
            shift = int(p[6 + nc + c])
            window = 0
            if tie:
                window = int(p[6 + 2 * nc + c])
            s2 = shift - 12
            fast = 0
            mask = 0
            half = 0
            if s2 >= 8 and s2 <= 30:
                fast = 1
                mask = (1 << s2) - 1
                half = 1 << (s2 - 1)
            for j in range(inner):
                a = int(acc[i])
                if (a >> 31) == 1:
                    a -= lift * lift
                q = 0
                slow = 1
                if fast and a < 0x80000 and a > -0x80000:  # see the docstring
                    v = a * mh + ((a * ml) >> 12)
                    r = (v & mask) - half
                    if r > 72:
                        q = (v >> s2) + 1
                        slow = 0
                    elif r < -72:
                        q = v >> s2
                        slow = 0
                    if window and r <= window and r >= 0 - window:
                        acc[i] = mark
                if slow:
                    if window:
                        acc[i] = mark
                    if a < 0:
                        q = 0 - int(requant_exact(0 - a, mul, shift))
                    else:
                        q = int(requant_exact(a, mul, shift))
                v = q + yz
                if v < lo_q:
                    v = lo_q
                if v > hi_q:
                    v = hi_q
                y[i] = v
                i += 1
    return n


@micropython.viper
def requant_exact(a: int, mul: int, sh: int) -> int:
    """round_half_even(fl32(fl32(a) * mul * 2**-sh)) for 0 <= a < 2**31, at most 2**23.

    a is rounded to 24 significant bits (fl32 of the int32), a < 2**24 (a rounding up to
    2**24 becomes 2**23 with sh - 1). P = a * mul < 2**48 is formed as hi * 2**24 + lo from
    12-bit halves: ah, al, mh, ml < 2**12, every product < 2**24, mid = ah*ml + al*mh
    < 2**25, lo < 2**25 before its carry, hi < 2**24. fl32(P) keeps the top 24 bits of P
    (t < 2**24, t * 2**b, half to even) and the result rounds t * 2**(b - sh) half to even.
    """
    if a >= 0x1000000:
        b = 1
        while (a >> b) >= 0x1000000:
            b += 1
        r = a & ((1 << b) - 1)
        a >>= b
        hb = 1 << (b - 1)
        if r > hb or (r == hb and (a & 1)):
            a += 1
        sh -= b
        if a == 0x1000000:
            a = 0x800000
            sh -= 1
    mh = mul >> 12
    ml = mul & 0xFFF
    ah = a >> 12
    al = a & 0xFFF
    mid = ah * ml + al * mh
    lo = al * ml + ((mid & 0xFFF) << 12)
    hi = ah * mh + (mid >> 12) + (lo >> 24)
    lo &= 0xFFFFFF
    if hi == 0:
        t = lo
        e = sh
    else:  # P has 24 + b bits: round it to its top 24 (fl32)
        b = 1
        u = hi
        if u >= 0x10000:
            u >>= 16
            b += 16
        if u >= 0x100:
            u >>= 8
            b += 8
        if u >= 0x10:
            u >>= 4
            b += 4
        if u >= 0x4:
            u >>= 2
            b += 2
        if u >= 0x2:
            b += 1
        t = (hi << (24 - b)) | (lo >> b)
        r = lo & ((1 << b) - 1)
        hb = 1 << (b - 1)
        if r > hb or (r == hb and (t & 1)):
            t += 1
        e = sh - b
    if e <= 0:  # |value| >= 2**23: saturates
        return 0x800000
    if e >= 25:  # t * 2**-e <= 1/2, ties to 0
        return 0
    q = t >> e
    r = t & ((1 << e) - 1)
    hb = 1 << (e - 1)
    if r > hb or (r == hb and (q & 1)):
        q += 1
    return q


@micropython.viper
def maxpool(x: ptr8, y: ptr8, p: ptr32, unused: int) -> int:
    """y = max over each window of x (stored bytes, order preserved). p: C H W OH OW KH KW SH SW DH DW PT PL."""
    c = int(p[0])
    h = int(p[1])
    wd = int(p[2])
    oh = int(p[3])
    ow = int(p[4])
    kh = int(p[5])
    kw = int(p[6])
    sh = int(p[7])
    sw = int(p[8])
    dh = int(p[9])
    dw = int(p[10])
    pt = int(p[11])
    pl = int(p[12])
    o = 0
    if kh == 1 and kw == 2 and pt == 0 and pl == 0 and (ow - 1) * sw + dw < wd:
        # pairs along rows, all inside (the common 1-D MaxPool k=2): no window loops
        for ch in range(c):
            for oy in range(oh):
                xi = ch * h * wd + oy * sh * wd
                for ox in range(ow):
                    a = int(x[xi])
                    b = int(x[xi + dw])
                    if b > a:
                        a = b
                    y[o] = a
                    o += 1
                    xi += sw
        return o
    for ch in range(c):
        base = ch * h * wd
        for oy in range(oh):
            iy0 = oy * sh - pt
            inside_y = iy0 >= 0 and iy0 + (kh - 1) * dh < h
            for ox in range(ow):
                ix0 = ox * sw - pl
                m = 0
                if inside_y and ix0 >= 0 and ix0 + (kw - 1) * dw < wd:  # no padding checks
                    xr = base + iy0 * wd + ix0
                    for ky in range(kh):
                        xi = xr
                        xe = xr + kw * dw
                        while xi < xe:
                            v = int(x[xi])
                            if v > m:
                                m = v
                            xi += dw
                        xr += dh * wd
                else:
                    for ky in range(kh):
                        iy = iy0 + ky * dh
                        if iy >= 0 and iy < h:
                            for kx in range(kw):
                                ix = ix0 + kx * dw
                                if ix >= 0 and ix < wd:
                                    v = int(x[base + iy * wd + ix])
                                    if v > m:
                                        m = v
                y[o] = m
                o += 1
    return o


@micropython.viper
def avgsum(x: ptr8, acc: ptr32, p: ptr32, unused: int) -> int:
    """acc[c] = sum of (x - xz) over channel c (global average pooling before requant).

    p: C N xz with N values per channel; |acc| <= 255 * N < 2**31 (compiler: N < 2**23).
    """
    c = int(p[0])
    nn = int(p[1])
    xz = int(p[2])
    i = 0
    for ch in range(c):
        s = 0
        e = i + nn
        while i < e:
            s += int(x[i])
            i += 1
        acc[ch] = s - xz * nn
    return c


@micropython.viper
def lut(x: ptr8, y: ptr8, p: ptr32, n: int) -> int:
    """y[i] = table[x[i]]: any elementwise map of one 8-bit tensor (a requantization).

    p: table[256] of stored output bytes, indexed by the stored input byte.
    """
    for i in range(n):
        y[i] = int(p[int(x[i])])
    return n


@micropython.viper
def copy8(src: ptr8, dst: ptr8, n: int, bias: int) -> int:
    """dst[i] = src[i] - bias: stored bytes out as int8 (bias 128; a viper byte store keeps
    the two's complement byte) or uint8 (bias 0)."""
    for i in range(n):
        dst[i] = int(src[i]) - bias
    return n


@micropython.viper
def dot(a: ptr8, b: ptr8, n: int, reps: int) -> int:
    """The ceiling of `qis bench model`: a bare signed int8 dot product of two stored-form
    arrays, sum (a[i] - 128) * (b[i] - 128), repeated reps times (returns the last sum)."""
    s = 0
    for r in range(reps):
        s = 0
        for i in range(n):
            s += (int(a[i]) - 128) * (int(b[i]) - 128)
    return s
