# Integer hot loops of the edge model runtime (edge/model.py runs them in plan order).
#
# Rules of this module:
# - Stateless: every kernel takes (a, b, c, p) and writes its result into a caller-owned
#   buffer; nothing is allocated per call, nothing is returned but an int.
# - 8-bit activations and weights are bytes in a "stored" form: uint8 values as they are,
#   int8 values biased by +128 (stored = q ^ 0x80). A zero point given in a parameter
#   block is in the same stored form, so (stored - zp) is always the true integer.
# - 32-bit data (accumulators, parameter blocks) are array('i') objects.
# - Every kernel is written once. On MicroPython it is compiled with @micropython.viper
#   (machine-word ints, 64-bit on the unix port); on CPython the decorator is the identity
#   and the same source runs as plain Python. A viper ptr32 load is zero-extended, so
#   signed 32-bit values go through `if v > 0x7FFFFFFF: v -= 0x100000000`, a no-op on
#   CPython where array('i') already yields signed ints.
# - Requantization reproduces onnxruntime's MLAS float path bit for bit in integers:
#   y = sat(round_half_even(fl32(acc * m)) + zp) with m = M * 2**-S, M the 24-bit
#   mantissa of the float32 multiplier; fl32() (rounding the exact product to 24
#   significant bits, half to even) is emulated. |acc| must stay below 2**24 (float32
#   converts it exactly) and acc * M below 2**63: true for K * 255 * 255 < 2**24.
# - Word size: acc * M needs up to 48 bits. The unix port's viper ints are 64-bit; on a
#   32-bit port (ESP32, RP2040) requant and the ptr32 sign fix need a split multiply,
#   not written yet (the same source without @micropython.viper is correct there, but
#   slow, and big ints allocate).
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
    hw = h * wd
    ohw = oh * ow
    macs = 0
    wi = 0
    for oc in range(cout):
        b = int(p[16 + oc])
        if b > 0x7FFFFFFF:
            b -= 0x100000000
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
    acc = sum_k x * w - wz[n] * sum_k x + c[n].
    """
    m = int(p[0])
    k = int(p[1])
    n = int(p[2])
    o = 0
    for r in range(m):
        xo = r * k
        sx = 0
        for i in range(k):
            sx += int(x[xo + i])
        wi = 0
        for c in range(n):
            b = int(p[4 + c])
            if b > 0x7FFFFFFF:
                b -= 0x100000000
            s = 0
            xi = xo
            xe = xo + k
            while xi < xe:
                s += int(x[xi]) * int(w[wi])
                xi += 1
                wi += 1
            acc[o] = s - int(p[4 + n + c]) * sx + b
            o += 1
    return m * n * k


@micropython.viper
def requant(acc: ptr32, y: ptr8, p: ptr32, n: int) -> int:
    """y[i] = sat(round_half_even(fl32(acc[i] * M_c * 2**-S_c)) + yz) for n values.

    p: inner C yz lo hi, M[C], S[C]; channel c = (i // inner) % C; lo/hi in stored form.
    """
    inner = int(p[0])
    nc = int(p[1])
    yz = int(p[2])
    lo = int(p[3])
    hi = int(p[4])
    i = 0
    while i < n:
        for c in range(nc):
            mul = int(p[5 + c])
            sh = int(p[5 + nc + c])
            half = 1 << (sh - 1)
            mask = (1 << sh) - 1
            for j in range(inner):
                a = int(acc[i])
                if a > 0x7FFFFFFF:
                    a -= 0x100000000
                neg = 0
                if a < 0:
                    a = 0 - a
                    neg = 1
                t = a * mul
                q = t >> sh
                r = (t & mask) - half
                if r > 0x1000000:  # far above the half: fl32 rounding of t cannot cross it
                    q += 1
                elif r >= -0x1000000 and t >= 0x1000000:
                    # near a tie: round t to 24 significant bits (half to even) as
                    # float32 does, then round t * 2**-sh half to even
                    u = t >> 24
                    bl = 1
                    if u >= 0x10000:
                        u >>= 16
                        bl += 16
                    if u >= 0x100:
                        u >>= 8
                        bl += 8
                    if u >= 0x10:
                        u >>= 4
                        bl += 4
                    if u >= 0x4:
                        u >>= 2
                        bl += 2
                    if u >= 0x2:
                        bl += 1
                    r = t & ((1 << bl) - 1)
                    t >>= bl
                    hb = 1 << (bl - 1)
                    if r > hb or (r == hb and (t & 1)):
                        t += 1
                    t <<= bl
                    q = t >> sh
                    r = t & mask
                    if r > half or (r == half and (q & 1)):
                        q += 1
                elif r > 0 or (r == 0 and (q & 1)):  # small product: exact in float32
                    q += 1
                if neg:
                    q = 0 - q
                v = q + yz
                if v < lo:
                    v = lo
                if v > hi:
                    v = hi
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
    """acc = sum of (x - xz) over each window (padding counts as zero). p: C H W OH OW KH KW SH SW PT PL xz."""
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
    xz = int(p[11])
    o = 0
    for ch in range(c):
        base = ch * h * wd
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                s = 0
                for ky in range(kh):
                    iy = iy0 + ky
                    if iy >= 0 and iy < h:
                        for kx in range(kw):
                            ix = ix0 + kx
                            if ix >= 0 and ix < wd:
                                s += int(x[base + iy * wd + ix]) - xz
                acc[o] = s
                o += 1
    return o


@micropython.viper
def add(a: ptr8, b: ptr8, y: ptr8, p: ptr32) -> int:
    """y = sat(round_half_even(((a - az) * MA + (b - bz) * MB) / 2**S) + yz). p: n az bz yz lo hi MA MB S."""
    n = int(p[0])
    az = int(p[1])
    bz = int(p[2])
    yz = int(p[3])
    lo = int(p[4])
    hi = int(p[5])
    ma = int(p[6])
    mb = int(p[7])
    sh = int(p[8])
    half = 1 << (sh - 1)
    mask = (1 << sh) - 1
    for i in range(n):
        t = (int(a[i]) - az) * ma + (int(b[i]) - bz) * mb
        neg = 0
        if t < 0:
            t = 0 - t
            neg = 1
        q = t >> sh
        r = t & mask
        if r > half or (r == half and (q & 1)):
            q += 1
        if neg:
            q = 0 - q
        v = q + yz
        if v < lo:
            v = lo
        if v > hi:
            v = hi
        y[i] = v
    return n


@micropython.viper
def dot(a: ptr8, b: ptr8, n: int, reps: int) -> int:
    """Bare int8 dot product (the interpreter's ceiling, for benchmarks): sum a[i] * b[i], reps times."""
    s = 0
    for r in range(reps):
        for i in range(n):
            s += int(a[i]) * int(b[i])
    return s
