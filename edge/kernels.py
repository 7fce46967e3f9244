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
#   as plain Python. tests/edge/test_word32.py runs this very source with 32-bit words.
#
# 32-bit machine words (ESP32, RP2040, any Cortex-M): every intermediate of every kernel
# fits a signed 32-bit word for all 8-bit inputs and every parameter the compiler emits.
# The bounds, with X = max|x - xz| <= 255 and W = max|w - wz| <= 255:
# - conv/fc accumulators: |acc| <= |bias| + X * sum|w - wz| per output channel; the
#   compiler computes this sum exactly and refuses a layer where it reaches 2**31 (fc
#   also checks its folded partial sums, see fc()).
# - requant: |acc| < 2**31 is first rounded to 24 significant bits (as float32 does), so
#   a < 2**24; the 24-bit multiplier M is split in 12-bit halves, so every partial product
#   is below 2**24 and every sum below 2**26 (derivation on requant()).
# - The float32 paths of onnxruntime (Add, AveragePool) are emulated in edge/float32.py,
#   which states its own bounds; a model without those ops never imports it.
# - Constants: viper loads any literal above 2**30 as an object on a 32-bit port, so none
#   appears; MicroPython's small ints are 31-bit there, and a viper function returns only
#   values below 2**29 so that returning never allocates.
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
def conv(x: ptr8, w: ptr8, acc: ptr32, p: ptr32) -> int:
    """acc[Cout,OH,OW] = sum (x - xz) * (w - wz) + bias: 2-D (1-D: H = 1) grouped conv.

    p: Cin H W Cout OH OW KH KW SH SW DH DW PT PL G xz, bias[Cout], wz[Cout].
    x is [Cin,H,W] stored bytes, w is [Cout,Cin/G,KH,KW] stored bytes. Returns MACs.
    Loop order: per weight tap, a long inner loop over the output row (padding clipped
    once per tap), so the hot loop is one load, one multiply-add, one accumulator update.
    """
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
    cig = cin // int(p[14])
    cog = cout // int(p[14])
    xz = int(p[15])
    lift = 0x10000
    hw = h * wd
    ohw = oh * ow
    macs = 0
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
                    if ox1 <= ox0:
                        continue
                    for oy in range(oh):
                        iy = oy * sh + dy
                        if iy < 0 or iy >= h:
                            continue
                        xi = xc + iy * wd + ox0 * sw + dx
                        o = ob + oy * ow + ox0
                        oe = ob + oy * ow + ox1
                        macs += ox1 - ox0
                        while o < oe:
                            acc[o] += (int(x[xi]) - xz) * wv
                            xi += sw
                            o += 1
    return macs


@micropython.viper
def fc(x: ptr8, w: ptr8, acc: ptr32, p: ptr32) -> int:
    """acc[M,N] = sum_k (x[m,k] - xz) * (w[n,k] - wz[n]) + bias[n].

    p: M K N xz, c[N], wz[N] where c[n] = bias[n] - xz * sum_k w[n,k] + K * xz * wz[n]
    (folded by the compiler), so the hot loop is a bare dot product of stored bytes:
    acc = sum_k x * w - wz[n] * sum_k x + c[n]. 32 bits: the dot is at most K * 255**2,
    wz * sum x at most K * 255**2; the compiler checks K * 2 * 255**2 + |c| < 2**31.
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

    p: inner C yz lo hi, M[C], S[C]; channel c = (i // inner) % C; lo/hi in stored form.
    This is onnxruntime's MLAS requantization (float32 accumulator times a float32
    multiplier M * 2**-S, M its 24-bit mantissa), done in 32-bit integers:
    a = |acc| rounded to 24 significant bits (fl32 of the int32), a < 2**24 (a rounding up
    to 2**24 becomes 2**23 with S - 1). P = a * M < 2**48 is formed as hi * 2**24 + lo
    from 12-bit halves: ah, al, mh, ml < 2**12, every product < 2**24, mid = ah*ml + al*mh
    < 2**25, lo < 2**25 before its carry, hi < 2**24. fl32(P) keeps the top 24 bits of P
    (t < 2**24, t * 2**b, half to even) and the result rounds t * 2**(b - S) half to even.
    """
    inner = int(p[0])
    nc = int(p[1])
    yz = int(p[2])
    lo_q = int(p[3])
    hi_q = int(p[4])
    lift = 0x10000
    i = 0
    while i < n:
        for c in range(nc):
            mul = int(p[5 + c])
            mh = mul >> 12
            ml = mul & 0xFFF
            shift = int(p[5 + nc + c])
            for j in range(inner):
                a = int(acc[i])
                if (a >> 31) == 1:
                    a -= lift * lift
                neg = 0
                if a < 0:
                    a = 0 - a
                    neg = 1
                sh = shift
                if a >= 0x1000000:  # float32(acc) rounds: keep 24 significant bits
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
                    q = 0x800000
                elif e >= 25:  # t * 2**-e <= 1/2, ties to 0
                    q = 0
                else:
                    q = t >> e
                    r = t & ((1 << e) - 1)
                    hb = 1 << (e - 1)
                    if r > hb or (r == hb and (q & 1)):
                        q += 1
                if neg:
                    q = 0 - q
                v = q + yz
                if v < lo_q:
                    v = lo_q
                if v > hi_q:
                    v = hi_q
                y[i] = v
                i += 1
    return n


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
    for ch in range(c):
        base = ch * h * wd
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                m = 0
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
def dot(a: ptr8, b: ptr8, n: int, reps: int) -> int:
    """The ceiling of `qis bench model`: a bare signed int8 dot product of two stored-form
    arrays, sum (a[i] - 128) * (b[i] - 128), repeated reps times (returns the last sum)."""
    s = 0
    for r in range(reps):
        s = 0
        for i in range(n):
            s += (int(a[i]) - 128) * (int(b[i]) - 128)
    return s
