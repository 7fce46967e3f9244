# Integer kernels of the edge model runtime on small hand-computed cases.
# Runs under pytest and under MicroPython (viper): the same expectations hold for both.
from array import array

from edgetest import load

kernels = load("kernels")


def s8(values):
    """int8 values in the kernels' stored form (biased by +128)."""
    return bytearray(v + 128 for v in values)


def test_conv_1d_padding_stride():
    # x = [1, 2, 3, 4] (int8, zp 0), w = [1, -1, 2], pad 1 each side, stride 2.
    # padded: [0, 1, 2, 3, 4, 0]; outputs at 0: 0*1 + 1*-1 + 2*2 = 3; at 2: 2 - 3 + 8 = 7
    x = s8([1, 2, 3, 4])
    w = s8([1, -1, 2])
    acc = array("i", [0] * 2)
    p = array("i", [1, 1, 4, 1, 1, 2, 1, 3, 1, 2, 1, 1, 0, 1, 1, 128, 10, 128])
    macs = kernels.conv(x, w, acc, p)
    assert list(acc) == [3 + 10, 7 + 10]
    assert macs == 2 + 3


def test_conv_2d_groups_dilation_zero_points():
    # 2 input channels, group 2 -> each output channel sees one input channel.
    # x zero point 3 (uint8 stored as is), weight zero points 1 and 2 (uint8).
    x = bytearray([3, 4, 5, 6, 7, 8, 9, 10, 11,  # ch0 3x3 -> minus zp: 0..8
                   4, 4, 4, 4, 4, 4, 4, 4, 4])  # ch1 all 1 after zp
    # 2x2 kernel with dilation 2 on a 3x3 input: one output, taps at corners
    w = bytearray([2, 1, 1, 3,  # ch0: minus zp 1 -> [1, 0, 0, 2]
                   3, 3, 3, 3])  # ch1: minus zp 2 -> all 1
    acc = array("i", [0, 0])
    p = array("i", [2, 3, 3, 2, 1, 1, 2, 2, 1, 1, 2, 2, 0, 0, 2, 3, -5, 7, 1, 2])
    kernels.conv(x, w, acc, p)
    # ch0: x corners (minus zp) = 0, 2, 6, 8 -> 0*1 + 2*0 + 6*0 + 8*2 = 16, bias -5
    # ch1: 4 taps of 1*1 = 4, bias 7
    assert list(acc) == [11, 11]


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
    p = array("i", [1, 1, 128 + 0, 0, 255, 1 << 23, 24])  # int8 out, zp 0, full range
    kernels.requant(acc, y, p, 10)
    assert [v - 128 for v in y] == [2, 2, -2, -2, 127, -128, 0, 4, 0, 0]


def test_requant_clamp_and_per_channel():
    # two channels of inner size 2: multipliers 1.0 and 0.25, relu clamp at zp -10
    acc = array("i", [-7, 9, 6, 10])
    y = bytearray(4)
    p = array("i", [2, 2, 118, 118, 255, 1 << 23, 1 << 23, 23, 25])
    kernels.requant(acc, y, p, 4)
    # ch0: -7 -> -17 clamped to -10; 9 -> -1.  ch1: 1.5 -> 2 -> -8; 2.5 -> 2 -> -8
    assert [v - 128 for v in y] == [-10, -1, -8, -8]


def test_requant_emulates_the_float32_product():
    # m = float32 9.624655e-05 = 13228025 * 2**-37. acc * m = 115.4999977 exactly, but
    # float32(acc * m) = 115.5 -> half to even -> 116, which onnxruntime (MLAS) produces.
    y = bytearray(2)
    p = array("i", [1, 1, 128, 0, 255, 13228025, 37])
    kernels.requant(array("i", [1200043]), y, p, 1)
    assert y[0] - 128 == 116  # exact rounding would give 115
    # m = 10348501 * 2**-35: -91.4999982 exactly, float32 -91.5 -> -92
    p = array("i", [1, 1, 128, 0, 255, 10348501, 35])
    kernels.requant(array("i", [-303804]), y, p, 1)
    assert y[0] - 128 == -92


def test_maxpool_padding_and_stride():
    x = bytearray([1, 9, 3, 4, 8, 2])  # 1 channel, 1x6
    y = bytearray(3)
    p = array("i", [1, 1, 6, 1, 3, 1, 3, 1, 2, 1, 1, 0, 1])  # k3 s2 pad-left 1
    kernels.maxpool(x, y, p, 0)
    assert list(y) == [9, 9, 8]  # windows [pad,1,9] [9,3,4] [4,8,2]


def test_avgsum_subtracts_zero_point():
    x = bytearray([10, 12, 14, 16, 20, 20])  # 2 channels of 1x3, zp 10
    acc = array("i", [0, 0])
    p = array("i", [2, 1, 3, 1, 1, 1, 3, 1, 1, 0, 0, 10])
    kernels.avgsum(x, acc, p, 0)
    assert list(acc) == [0 + 2 + 4, 6 + 10 + 10]


def test_add_two_scales():
    # (a - 2) * 0.5 + (b - 1) * 0.25, out zp 128 (int8 0), shift 24
    a = bytearray([4, 2, 0])
    b = bytearray([5, 1, 7])
    y = bytearray(3)
    p = array("i", [3, 2, 1, 128, 0, 255, 1 << 23, 1 << 22, 24])
    kernels.add(a, b, y, p)
    # 1 + 1 = 2; 0; -1 + 1.5 = 0.5 -> 0 (half to even)
    assert [v - 128 for v in y] == [2, 0, 0]


def test_dot_ceiling_loop():
    a = bytearray([1, 2, 3])
    b = bytearray([4, 5, 6])
    assert kernels.dot(a, b, 3, 2) == 2 * 32
