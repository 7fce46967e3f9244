# Integer kernels of the edge model runtime on small hand-computed cases.
# Runs under pytest and under MicroPython (viper): the same expectations hold for both.
from array import array

from edgetest import load

kernels = load("kernels")
float32 = load("float32")


def s8(values):
    """int8 values in the kernels' stored form (biased by +128)."""
    return bytearray(v + 128 for v in values)


def conv_params(head, bias, w, wz, xz, k):
    """A conv's (parameter block, column buffer) as the compiler folds it and edge/model.py
    binds it (see kernels.conv)."""
    cout = len(bias)
    c = [bias[o] - xz * sum(w[o * k : o * k + k]) + k * xz * wz[o] for o in range(cout)]
    ow = head[5]
    return array("i", head + c + wz + [0] * ow), bytearray(ow * k)


def test_conv_1d_padding_stride():
    # x = [1, 2, 3, 4] (int8, zp 0), w = [1, -1, 2], pad 1 each side, stride 2.
    # padded: [0, 1, 2, 3, 4, 0]; outputs at 0: 0*1 + 1*-1 + 2*2 = 3; at 2: 2 - 3 + 8 = 7
    x = s8([1, 2, 3, 4])
    w = s8([1, -1, 2])
    acc = array("i", [0] * 2)
    p = conv_params([1, 1, 4, 1, 1, 2, 1, 3, 1, 2, 1, 1, 0, 1, 1, 128], [10], w, [128], 128, 3)
    macs = kernels.conv(x, w, acc, p)
    assert list(acc) == [3 + 10, 7 + 10]
    assert macs == 2 * 3


def test_conv_2d_groups_dilation_zero_points():
    # 2 input channels, group 2 -> each output channel sees one input channel (depthwise).
    # x zero point 3 (uint8 stored as is), weight zero points 1 and 2 (uint8).
    x = bytearray([3, 4, 5, 6, 7, 8, 9, 10, 11,  # ch0 3x3 -> minus zp: 0..8
                   4, 4, 4, 4, 4, 4, 4, 4, 4])  # ch1 all 1 after zp
    # 2x2 kernel with dilation 2 on a 3x3 input: one output, taps at corners
    w = bytearray([2, 1, 1, 3,  # ch0: minus zp 1 -> [1, 0, 0, 2]
                   3, 3, 3, 3])  # ch1: minus zp 2 -> all 1
    acc = array("i", [0, 0])
    p = conv_params([2, 3, 3, 2, 1, 1, 2, 2, 1, 1, 2, 2, 0, 0, 2, 3], [-5, 7], w, [1, 2], 3, 4)
    kernels.conv(x, w, acc, p)
    # ch0: x corners (minus zp) = 0, 2, 6, 8 -> 0*1 + 2*0 + 6*0 + 8*2 = 16, bias -5
    # ch1: 4 taps of 1*1 = 4, bias 7
    assert list(acc) == [11, 11]


def test_conv_gathers_windows_for_several_filters_with_padding():
    # 2 input channels, 3 filters of 2x3x1 (1-D, k3, pad 1): every window has 6 taps
    xs = [[1, -2, 3, 4], [0, 5, -1, 2]]
    ws = [[[1, 0, -1], [2, 1, 0]], [[0, 1, 0], [0, 1, 0]], [[-1, -1, -1], [3, 0, 1]]]
    x = s8(xs[0] + xs[1])
    w = s8([v for f in ws for row in f for v in row])
    acc = array("i", [0] * 12)
    p = conv_params([2, 1, 4, 3, 1, 4, 1, 3, 1, 1, 1, 1, 0, 1, 1, 128], [0, 100, -7], w, [128] * 3, 128, 6)
    assert kernels.conv(x, w, acc, p) == 3 * 4 * 6
    want = []
    for f, bias in zip(ws, [0, 100, -7]):
        for o in range(4):
            s = bias
            for ci in range(2):
                for t in range(3):
                    i = o + t - 1
                    if 0 <= i < 4:
                        s += xs[ci][i] * f[ci][t]
            want.append(s)
    assert list(acc) == want


def test_fc_per_channel_zero_points_and_negative_bias():
    x = s8([1, -2, 3])
    w = s8([1, 1, 1, 2, 0, -1])  # rows n=0: [1,1,1], n=1: [2,0,-1]
    acc = array("i", [0, 0])
    xz, wz, k = 128 + 1, [128, 128 + 1], 3  # x zp 1: x - zp = [0, -3, 2]; w zp 0 and 1
    bias = [-100, 7]
    # the compiler folds the bias: c[n] = bias[n] - xz * sum_k w[n,k] + K * xz * wz[n]
    c = [bias[n] - xz * sum(w[n * k : n * k + k]) + k * xz * wz[n] for n in range(2)]
    p = array("i", [1, k, 2, xz] + c + wz)
    assert kernels.fc(x, w, acc, p) == 6
    # n=0: 0*1 - 3*1 + 2*1 - 100 = -101; n=1 (w - 1 = [1, -1, -2]): 0 + 3 - 4 + 7 = 6
    assert list(acc) == [-101, 6]


def test_requant_rounds_half_to_even_and_saturates():
    # multiplier 0.5 = 2**23 * 2**-24
    # (1 and -1: products below 2**24 take the kernel's short path)
    acc = array("i", [3, 5, -3, -5, 1000, -1000, 0, 7, 1, -1])
    y = bytearray(10)
    p = array("i", [1, 1, 128 + 0, 0, 255, 0, 1 << 23, 24])  # int8 out, zp 0, full range
    kernels.requant(acc, y, p, 10)
    assert [v - 128 for v in y] == [2, 2, -2, -2, 127, -128, 0, 4, 0, 0]


def test_requant_clamp_and_per_channel():
    # two channels of inner size 2: multipliers 1.0 and 0.25, relu clamp at zp -10
    acc = array("i", [-7, 9, 6, 10])
    y = bytearray(4)
    p = array("i", [2, 2, 118, 118, 255, 0, 1 << 23, 1 << 23, 23, 25])
    kernels.requant(acc, y, p, 4)
    # ch0: -7 -> -17 clamped to -10; 9 -> -1.  ch1: 1.5 -> 2 -> -8; 2.5 -> 2 -> -8
    assert [v - 128 for v in y] == [-10, -1, -8, -8]


def test_requant_emulates_the_float32_product():
    # m = float32 9.624655e-05 = 13228025 * 2**-37. acc * m = 115.4999977 exactly, but
    # float32(acc * m) = 115.5 -> half to even -> 116, which onnxruntime (MLAS) produces.
    y = bytearray(2)
    p = array("i", [1, 1, 128, 0, 255, 0, 13228025, 37])
    kernels.requant(array("i", [1200043]), y, p, 1)
    assert y[0] - 128 == 116  # exact rounding would give 115
    # m = 10348501 * 2**-35: -91.4999982 exactly, float32 -91.5 -> -92
    p = array("i", [1, 1, 128, 0, 255, 0, 10348501, 35])
    kernels.requant(array("i", [-303804]), y, p, 1)
    assert y[0] - 128 == -92


def test_requant_marks_values_near_a_tie_for_the_float_path():
    # multiplier 2**-12 (shift 35): v = acc * 2**11 and a tie where acc = 2048 (mod 4096);
    # a window of 3 * 2**11 marks |acc - 2048| <= 3
    acc = array("i", [2048 + 2, 2048 + 500, 3 * 4096, -2048 - 3])
    y = bytearray(4)
    kernels.requant(acc, y, array("i", [1, 1, 128, 0, 255, 1, 1 << 23, 35, 3 << 11]), 4)
    mark = -(1 << 31)
    assert [a == mark for a in acc] == [True, False, False, True]
    assert [v - 128 for v in y] == [1, 1, 3, -1]  # written as the integer path rounds
    big = array("i", [1 << 20])  # the slow path: marked while the window is not 0
    kernels.requant(big, y, array("i", [1, 1, 128, 0, 255, 1, 1 << 23, 35, 3 << 11]), 1)
    assert big[0] == mark
    big = array("i", [1 << 20])
    kernels.requant(big, y, array("i", [1, 1, 128, 0, 255, 1, 1 << 23, 35, 0]), 1)
    assert big[0] == 1 << 20


def test_maxpool_padding_and_stride():
    x = bytearray([1, 9, 3, 4, 8, 2])  # 1 channel, 1x6
    y = bytearray(3)
    p = array("i", [1, 1, 6, 1, 3, 1, 3, 1, 2, 1, 1, 0, 1])  # k3 s2 pad-left 1
    kernels.maxpool(x, y, p, 0)
    assert list(y) == [9, 9, 8]  # windows [pad,1,9] [9,3,4] [4,8,2]


def test_avgsum_sums_each_channel_minus_zero_point():
    x = bytearray([10, 12, 14, 16, 20, 20])  # 2 channels of 3 values, zp 10
    acc = array("i", [0, 0])
    kernels.avgsum(x, acc, array("i", [2, 3, 10]), 0)
    assert list(acc) == [0 + 2 + 4, 6 + 10 + 10]


def test_lut_maps_every_byte():
    p = array("i", [(255 - i) for i in range(256)])
    y = bytearray(3)
    kernels.lut(bytearray([0, 7, 255]), y, p, 3)
    assert list(y) == [255, 248, 0]


_OFFSET = 30  # packed floats below: value = m * 2**(t - 30)


def packed(value_times_4):
    """The packed float of value_times_4 / 4 (an exact float), as the compiler packs it."""
    v = value_times_4
    if v == 0:
        return 0
    sign = 1 if v < 0 else 0
    m = -v if v < 0 else v
    e = -2  # value = m * 2**e
    while m < 0x800000:
        m <<= 1
        e -= 1
    while m >= 0x1000000:
        m >>= 1  # the test values are exact: no bits are lost
        e += 1
    return ((e + _OFFSET) << 25) | (sign << 24) | m


def key(value_times_4):
    w = packed(value_times_4)
    if w == 0:
        return 0
    k = (w >> 25) * 0x800000 + (w & 0xFFFFFF)
    return -k if (w >> 24) & 1 else k


def test_fsum_adds_in_float32_with_round_to_nearest_even():
    assert float32.fsum(array("i", [packed(6), packed(9)]), 0, 2) == key(15)  # 1.5 + 2.25
    assert float32.fsum(array("i", [packed(6), packed(-9)]), 0, 2) == key(-3)
    assert float32.fsum(array("i", [packed(6), packed(-6), 0]), 0, 3) == 0
    big = 4 << 24  # 2**24: its float32 neighbours are 2 apart
    assert float32.fsum(array("i", [packed(big), packed(4)]), 0, 2) == key(big)  # tie: to even
    assert float32.fsum(array("i", [packed(big + 8), packed(4)]), 0, 2) == key(big + 16)  # tie: to even
    assert float32.fsum(array("i", [packed(big), packed(4), packed(4)]), 0, 3) == key(big)  # each add rounds
    assert float32.fsum(array("i", [packed(4), packed(4), packed(big)]), 0, 3) == key(big + 8)
    assert float32.fsum(array("i", [packed(3), packed(5), packed(-1)]), 1, 2) == key(4)  # start, count


def test_rank_counts_thresholds_at_or_below_a_key():
    bias = 0x20000000
    p = array("i", [0, 0, key(-2) + bias, key(2) + bias, key(6) + bias])
    assert [float32.rank(key(v), p, 2, 3) for v in (-3, -2, 0, 2, 5, 6, 40)] == [0, 1, 1, 2, 2, 3, 3]


def _thresholds(qmin, qmax):
    # smallest sums (in quarters, exact) that round to q or more, half to even, for integer outputs
    return [key(4 * q - 2 + (0 if q % 2 == 0 else 1)) + 0x20000000 for q in range(qmin + 1, qmax + 1)]


def test_addf_sums_two_tables_and_rounds_through_thresholds():
    # A[x] = (x - 128) / 2, B[x] = (x - 128) / 4: y = clamp(rne(a/2 + b/4)) in [-3, 3], stored +128
    tab_a = [packed(2 * (i - 128)) for i in range(256)]
    tab_b = [packed(i - 128) for i in range(256)]
    thr = _thresholds(-3, 3)
    p = array("i", [4, 4, 2, 125, len(thr)] + tab_a + tab_b + thr + [0, 0])
    a = s8([1, 3, -1, 9])
    b = s8([2, 2, 0, 0])  # repeats every 2 values (a broadcast vector)
    y = bytearray(4)
    float32.addf(a, b, y, p)
    # 0.5 + 0.5 = 1; 1.5 + 0.5 = 2; -0.5 + 0 = -0.5 -> 0 (even); 4.5 -> 3 (clamped)
    assert [v - 128 for v in y] == [1, 2, 0, 3]


def test_avgpool_sums_windows_and_rounds_through_thresholds():
    # D[x] = (x - 128) / 4; 1 channel 1x5, k2 s2 pad-left 1 (counted): windows [pad,x0] [x1,x2] [x3,x4]
    table = [packed(i - 128) for i in range(256)]
    thr = _thresholds(-2, 2)  # the compiler folds the divisor into these; here it is 1
    p = array("i", [1, 1, 5, 1, 3, 1, 2, 1, 2, 0, 1, 126, len(thr)] + table + thr + [0, 0])
    x = s8([2, 3, 3, -8, 1])
    y = bytearray(3)
    float32.avgpool(x, y, p, 0)
    # 0.5 -> 0 (even); 1.5 -> 2; -1.75 -> -2
    assert [v - 128 for v in y] == [0, 2, -2]


def test_dot_ceiling_is_a_signed_int8_dot():
    a = s8([1, -2, 3])
    b = s8([4, 5, -6])
    assert kernels.dot(a, b, 3, 2) == 4 - 10 - 18
