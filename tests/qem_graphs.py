"""Seeded random quantized ONNX graphs, one generator per supported op and form, for the
conformance tests of the compiler (tests/interop/test_qem_conformance.py) and the 32-bit
kernel proof (tests/interop/test_kernels_32bit.py).

A generator takes (numpy Generator, folder) and returns a Case: the ONNX file, what
onnxruntime is fed (all rows; a fixed-batch model is fed one row at a time by the
checker), and the same inputs quantized as the edge runtime takes them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

OPSET = [oh.make_opsetid("", 13), oh.make_opsetid("com.microsoft", 1)]
ONNX_TYPE = {np.dtype(np.int8): TP.INT8, np.dtype(np.uint8): TP.UINT8}
ROWS = 16


@dataclass
class Case:
    path: str
    feed: np.ndarray  # rows for onnxruntime (float32, or the 8-bit input type)

    def rows(self, qm) -> np.ndarray:
        """The inputs as the edge runtime takes them: quantized like onnxruntime, one per row."""
        from qis.tools.qem.check import quantize_like_ort

        t = qm.tensors[qm.inputs[0][1]]
        if self.feed.dtype == np.float32:
            q = quantize_like_ort(self.feed, t.scale, t.zero_point, np.int8 if t.dtype == 0 else np.uint8)
        else:
            q = self.feed
        return q.reshape(-1, t.nelem)


def _save(nodes, inputs, outputs, inits, folder: Path, name: str, drop_ms: bool = False) -> str:
    m = oh.make_model(oh.make_graph(nodes, name, inputs, outputs, inits), opset_imports=OPSET)
    if drop_ms:
        m.opset_import.pop()
    m.ir_version = 8
    path = folder / (name + ".onnx")
    onnx.save(m, str(path))
    return str(path)


def _q(r, dt, shape):
    info = np.iinfo(dt)
    return r.integers(info.min, info.max + 1, size=shape).astype(dt)


def _scalar(name, value, dt=np.float32):
    return nh.from_array(np.array(value, dt), name)


def _dtypes(r):
    x = np.dtype(np.int8 if r.random() < 0.6 else np.uint8)
    w = np.dtype(np.int8 if x == np.int8 or r.random() < 0.5 else np.uint8)
    return x, w


def _weights(r, wdt, shape, channels: int, per_channel: bool):
    """Weights, scales and zero points (symmetric int8, or uint8 around 128)."""
    n = channels if per_channel else 1
    w = _q(r, wdt, shape)
    ws = (r.random(n) * 0.02 + 0.002).astype(np.float32)
    wz = np.zeros(n, wdt) if wdt == np.int8 else r.integers(100, 156, n).astype(wdt)
    return w, (ws if per_channel else ws.reshape(())), (wz if per_channel else wz.reshape(()))


def _geometry(r, nd: int, allow_auto: bool = True, dilate: bool = True, pool: bool = False):
    """Kernel, input size and attributes of a random window (pools: pads below the kernel)."""
    k = [int(r.integers(1, 4)) for _ in range(nd)]
    dil = [int(r.integers(1, 3)) if dilate else 1 for _ in range(nd)]
    strides = [int(r.integers(1, 3)) for _ in range(nd)]
    size = [int(r.integers(max(k[i] * dil[i], 3), 11)) for i in range(nd)]
    attrs = dict(kernel_shape=k, strides=strides)
    if dilate:
        attrs["dilations"] = dil
    if allow_auto and r.random() < 0.25:
        attrs["auto_pad"] = str(r.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
        if attrs["auto_pad"] != "VALID" and dilate:  # onnxruntime: no dilation with SAME_*
            attrs["dilations"] = [1] * nd
    else:
        reach = [k[i] - 1 if pool else k[i] * dil[i] - 1 for i in range(nd)]
        attrs["pads"] = [min(int(r.integers(0, 3)), reach[i % nd]) for i in range(2 * nd)]
    return k, size, attrs


# --- QOperator graphs (8-bit input, fixed batch of 1, several rows) ---


def qlinearconv(r, folder):
    nd = int(r.integers(1, 3))
    g = int(r.choice([1, 1, 2, 4]))
    cin, cout = g * int(r.integers(1, 4)), g * int(r.integers(1, 4))
    k, size, attrs = _geometry(r, nd)
    attrs["group"] = g
    xdt, wdt = _dtypes(r)
    w, ws, wz = _weights(r, wdt, [cout, cin // g] + k, cout, r.random() < 0.7)
    inits = [_scalar("xs", r.random() * 0.05 + 0.01), _scalar("xz", _q(r, xdt, ()) // 4, xdt), nh.from_array(w, "w"),
             nh.from_array(ws, "ws"), nh.from_array(wz, "wz"), _scalar("ys", r.random() * 0.05 + 0.02),
             _scalar("yz", _q(r, xdt, ()) // 2, xdt), nh.from_array(r.integers(-3000, 3000, cout).astype(np.int32), "b")]
    node = oh.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], name="qconv", **attrs)
    shape = [1, cin] + size
    path = _save([node], [oh.make_tensor_value_info("x", ONNX_TYPE[xdt], shape)], [oh.make_empty_tensor_value_info("y")],
                 inits, folder, "qlinearconv")
    return Case(path, _q(r, xdt, [ROWS] + shape[1:]))


def _qmatmul_inits(r, xdt, wdt, k, n, per_channel):
    b, ws, wz = _weights(r, wdt, (k, n), n, per_channel)
    return [_scalar("xs", r.random() * 0.05 + 0.01), _scalar("xz", _q(r, xdt, ()) // 4, xdt), nh.from_array(b, "b"),
            nh.from_array(ws, "ws"), nh.from_array(wz, "wz"), _scalar("ys", r.random() * 0.2 + 0.05),
            _scalar("yz", _q(r, xdt, ()) // 2, xdt)]


def qlinearmatmul(r, folder):
    m, k, n = int(r.integers(1, 5)), int(r.integers(1, 40)), int(r.integers(1, 20))
    xdt, wdt = _dtypes(r)
    inits = _qmatmul_inits(r, xdt, wdt, k, n, r.random() < 0.5)
    node = oh.make_node("QLinearMatMul", ["x", "xs", "xz", "b", "ws", "wz", "ys", "yz"], ["y"], name="qmm")
    path = _save([node], [oh.make_tensor_value_info("x", ONNX_TYPE[xdt], [m, k])],
                 [oh.make_empty_tensor_value_info("y")], inits, folder, "qlinearmatmul")
    return Case(path, _q(r, xdt, (ROWS * m, k)))


def qgemm(r, folder):
    k, n = int(r.integers(1, 40)), int(r.integers(1, 20))
    xdt, wdt = _dtypes(r)
    trans_b = int(r.integers(0, 2))
    inits = _qmatmul_inits(r, xdt, wdt, k, n, r.random() < 0.5)
    if trans_b:
        inits[2] = nh.from_array(np.ascontiguousarray(nh.to_array(inits[2]).T), "b")
    inits.append(nh.from_array(r.integers(-2000, 2000, n).astype(np.int32), "c"))
    node = oh.make_node("QGemm", ["x", "xs", "xz", "b", "ws", "wz", "c", "ys", "yz"], ["y"], name="qgemm",
                        domain="com.microsoft", transB=trans_b)
    path = _save([node], [oh.make_tensor_value_info("x", ONNX_TYPE[xdt], [1, k])],
                 [oh.make_empty_tensor_value_info("y")], inits, folder, "qgemm")
    return Case(path, _q(r, xdt, (ROWS, k)))


def qlinearadd(r, folder):
    """Two activations (x and a QLinearConv of it), or x and a constant vector."""
    dt = np.dtype(np.int8 if r.random() < 0.6 else np.uint8)
    c, length = int(r.integers(1, 4)), int(r.integers(2, 12))
    inits = [_scalar("xs", r.random() * 0.05 + 0.01), _scalar("xz", _q(r, dt, ()) // 4, dt),
             _scalar("bs", r.random() * 0.08 + 0.005), _scalar("bz", _q(r, dt, ()) // 4, dt),
             _scalar("ys", r.random() * 0.08 + 0.02), _scalar("yz", _q(r, dt, ()) // 2, dt)]
    nodes = []
    if r.random() < 0.5:
        inits += [nh.from_array(_q(r, dt, (c, c, 1)), "w"), _scalar("ws", 0.01), _scalar("wz", 0 if dt == np.int8 else 128, dt)]
        nodes.append(oh.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "bs", "bz"], ["b"], name="qconv"))
    else:
        inits.append(nh.from_array(_q(r, dt, (length,)), "b"))
    nodes.append(oh.make_node("QLinearAdd", ["x", "xs", "xz", "b", "bs", "bz", "ys", "yz"], ["y"], name="qadd",
                              domain="com.microsoft"))
    path = _save(nodes, [oh.make_tensor_value_info("x", ONNX_TYPE[dt], [1, c, length])],
                 [oh.make_empty_tensor_value_info("y")], inits, folder, "qlinearadd")
    return Case(path, _q(r, dt, (ROWS, c, length)))


def _pool_inits(r, dt):
    return [_scalar("xs", r.random() * 0.05 + 0.01), _scalar("xz", _q(r, dt, ()) // 4, dt),
            _scalar("ys", r.random() * 0.05 + 0.01), _scalar("yz", _q(r, dt, ()) // 4, dt)]


def qlinearaveragepool(r, folder):
    nd = int(r.integers(1, 3))
    dt = np.dtype(np.int8 if r.random() < 0.6 else np.uint8)
    k, size, attrs = _geometry(r, nd, allow_auto=False, dilate=False, pool=True)
    attrs["count_include_pad"] = 1
    c = int(r.integers(1, 4))
    node = oh.make_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"], name="qavg", domain="com.microsoft",
                        **attrs)
    path = _save([node], [oh.make_tensor_value_info("x", ONNX_TYPE[dt], [1, c] + size)],
                 [oh.make_empty_tensor_value_info("y")], _pool_inits(r, dt), folder, "qlinearaveragepool")
    return Case(path, _q(r, dt, [ROWS, c] + size))


def qlinearglobalaveragepool(r, folder):
    nd = int(r.integers(1, 3))
    dt = np.dtype(np.int8 if r.random() < 0.6 else np.uint8)
    shape = [1, int(r.integers(1, 6))] + [int(r.integers(1, 12)) for _ in range(nd)]
    node = oh.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"], name="qgap",
                        domain="com.microsoft")
    path = _save([node], [oh.make_tensor_value_info("x", ONNX_TYPE[dt], shape)], [oh.make_empty_tensor_value_info("y")],
                 _pool_inits(r, dt), folder, "qlinearglobalaveragepool")
    return Case(path, _q(r, dt, [ROWS] + shape[1:]))


def maxpool(r, folder):
    nd = int(r.integers(1, 3))
    dt = np.dtype(np.int8 if r.random() < 0.6 else np.uint8)
    k, size, attrs = _geometry(r, nd, pool=True)
    c = int(r.integers(1, 4))
    path = _save([oh.make_node("MaxPool", ["x"], ["y"], name="maxpool", **attrs)],
                 [oh.make_tensor_value_info("x", ONNX_TYPE[dt], [1, c] + size)], [oh.make_empty_tensor_value_info("y")],
                 [], folder, "maxpool", drop_ms=True)
    return Case(path, _q(r, dt, [ROWS, c] + size))


def matmulinteger(r, folder):
    m, k, n = int(r.integers(1, 5)), int(r.integers(1, 40)), int(r.integers(1, 20))
    xdt = np.dtype(np.uint8 if r.random() < 0.5 else np.int8)
    inits = [nh.from_array(_q(r, np.int8, (k, n)), "b"), _scalar("xz", _q(r, xdt, ()) // 4, xdt)]
    path = _save([oh.make_node("MatMulInteger", ["x", "b", "xz"], ["y"], name="mmi")],
                 [oh.make_tensor_value_info("x", ONNX_TYPE[xdt], [m, k])], [oh.make_empty_tensor_value_info("y")],
                 inits, folder, "matmulinteger", drop_ms=True)
    return Case(path, _q(r, xdt, (ROWS * m, k)))


def convinteger(r, folder):
    nd = int(r.integers(1, 3))
    cin, cout = int(r.integers(1, 4)), int(r.integers(1, 5))
    k = [int(r.integers(1, 4)) for _ in range(nd)]
    size = [int(r.integers(k[i] + 1, 10)) for i in range(nd)]
    inits = [nh.from_array(_q(r, np.uint8, [cout, cin] + k), "w"), _scalar("xz", int(r.integers(0, 255)), np.uint8)]
    attrs = dict(pads=[int(r.integers(0, k[i % nd])) for i in range(2 * nd)], strides=[int(r.integers(1, 3))] * nd)
    path = _save([oh.make_node("ConvInteger", ["x", "w", "xz"], ["y"], name="convi", **attrs)],
                 [oh.make_tensor_value_info("x", TP.UINT8, [1, cin] + size)], [oh.make_empty_tensor_value_info("y")],
                 inits, folder, "convinteger", drop_ms=True)
    return Case(path, _q(r, np.uint8, [ROWS, cin] + size))


# --- QDQ graphs (float input, fixed or dynamic batch) ---


class _QDQ:
    """Builds DequantizeLinear -> op -> QuantizeLinear chains on a float input."""

    def __init__(self, r, dt):
        self.r, self.dt = r, np.dtype(dt)
        self.nodes, self.inits = [], []

    def q(self, src: str, name: str, scale: float, zp: int) -> str:
        """QuantizeLinear then DequantizeLinear of src: the dequantized name."""
        self.inits += [_scalar(name + "_s", scale), _scalar(name + "_z", zp, self.dt)]
        self.nodes += [oh.make_node("QuantizeLinear", [src, name + "_s", name + "_z"], [name + "_q"]),
                       oh.make_node("DequantizeLinear", [name + "_q", name + "_s", name + "_z"], [name + "_d"])]
        return name + "_d"

    def act(self, src: str, name: str) -> str:
        r = self.r
        lo = -128 if self.dt == np.int8 else 0
        return self.q(src, name, r.random() * 0.05 + 0.01, int(r.integers(lo, lo + 256) // 4))

    def const(self, name: str, values: np.ndarray, scale, zp, axis: int = 1) -> str:
        scale = np.asarray(scale, np.float32)
        zp = np.broadcast_to(np.asarray(zp, values.dtype), scale.shape)
        self.inits += [nh.from_array(values, name + "_q"), nh.from_array(scale, name + "_s"),
                       nh.from_array(np.ascontiguousarray(zp), name + "_z")]
        self.nodes.append(oh.make_node("DequantizeLinear", [name + "_q", name + "_s", name + "_z"], [name + "_d"],
                                       axis=axis))
        return name + "_d"

    def weight(self, name: str, shape, channels: int, axis: int) -> tuple[str, np.ndarray]:
        per_channel = self.r.random() < 0.6
        w, ws, wz = _weights(self.r, np.int8, shape, channels, per_channel)
        return self.const(name, w, ws, wz, axis), np.asarray(ws, np.float32)

    def save(self, folder, name, in_shape, out: str, batch_fixed: bool) -> tuple[str, list]:
        shape = [1 if batch_fixed else "N"] + list(in_shape)
        path = _save(self.nodes, [oh.make_tensor_value_info("x", TP.FLOAT, shape)],
                     [oh.make_tensor_value_info(out, TP.FLOAT, None)], self.inits, folder, name, drop_ms=True)
        return path, in_shape


def _float_rows(r, in_shape):
    return (r.standard_normal([ROWS] + list(in_shape)) * 1.5).astype(np.float32)


def qdq_conv(r, folder):
    nd = int(r.integers(1, 3))
    b = _QDQ(r, np.int8 if r.random() < 0.7 else np.uint8)
    g = int(r.choice([1, 1, 2]))
    cin, cout = g * int(r.integers(1, 3)), g * int(r.integers(1, 4))
    k, size, attrs = _geometry(r, nd)
    x = b.act("x", "x")
    xs = np.float32(nh.to_array(b.inits[0]))
    w, ws = b.weight("w", [cout, cin // g] + k, cout, 0)
    bias = b.const("bias", r.integers(-500, 500, cout).astype(np.int32), (xs * ws).astype(np.float32), 0, 0)
    b.nodes.append(oh.make_node("Conv", [x, w, bias], ["c"], name="conv", group=g, **attrs))
    out = "c"
    if r.random() < 0.5:
        b.nodes.append(oh.make_node("Relu", ["c"], ["relu"], name="relu"))
        out = "relu"
    y = b.act(out, "y")
    path, shape = b.save(folder, "qdq_conv", [cin] + size, y, r.random() < 0.5)
    return Case(path, _float_rows(r, shape))


def qdq_matmul_add(r, folder):
    """A Linear layer as exporters write it unfused: MatMul, then Add of a bias vector."""
    k, n = int(r.integers(2, 40)), int(r.integers(1, 20))
    b = _QDQ(r, np.int8 if r.random() < 0.7 else np.uint8)
    x = b.act("x", "x")
    w, _ = b.weight("w", (k, n), n, 1)
    b.nodes.append(oh.make_node("MatMul", [x, w], ["mm"], name="matmul"))
    mm = b.act("mm", "mm")
    lo = -128 if b.dt == np.int8 else 0
    bias = b.const("bias", r.integers(lo, lo + 256, n).astype(b.dt), np.float32(r.random() * 0.01 + 0.001),
                   int(r.integers(lo, lo + 256) // 8))
    operands = [mm, bias] if r.random() < 0.7 else [bias, mm]
    b.nodes.append(oh.make_node("Add", operands, ["a"], name="add"))
    y = b.act("a", "y")
    path, shape = b.save(folder, "qdq_matmul_add", [k], y, r.random() < 0.5)
    return Case(path, _float_rows(r, shape))


def qdq_gemm(r, folder):
    k, n = int(r.integers(2, 40)), int(r.integers(1, 20))
    b = _QDQ(r, np.int8)
    x = b.act("x", "x")
    xs = float(nh.to_array(b.inits[0]))
    trans_b = int(r.integers(0, 2))
    w, ws = b.weight("w", (n, k) if trans_b else (k, n), n, 0 if trans_b else 1)
    bias = b.const("bias", r.integers(-3000, 3000, n).astype(np.int32), (np.float32(xs) * ws).astype(np.float32), 0, 0)
    b.nodes.append(oh.make_node("Gemm", [x, w, bias], ["g"], name="gemm", transB=trans_b))
    y = b.act("g", "y")
    path, shape = b.save(folder, "qdq_gemm", [k], y, r.random() < 0.5)
    return Case(path, _float_rows(r, shape))


def qdq_residual_add(r, folder):
    """x + Conv(x): two dequantized activations of the same shape."""
    c, length = int(r.integers(1, 4)), int(r.integers(3, 12))
    b = _QDQ(r, np.int8 if r.random() < 0.7 else np.uint8)
    x = b.act("x", "x")
    w, _ = b.weight("w", (c, c, 3), c, 0)
    b.nodes.append(oh.make_node("Conv", [x, w], ["c"], name="conv", pads=[1, 1]))
    conv = b.act("c", "c")
    b.nodes.append(oh.make_node("Add", [x, conv] if r.random() < 0.5 else [conv, x], ["a"], name="add"))
    out = "a"
    if r.random() < 0.3:
        b.nodes.append(oh.make_node("Relu", ["a"], ["relu"], name="relu"))
        out = "relu"
    y = b.act(out, "y")
    path, shape = b.save(folder, "qdq_residual_add", [c, length], y, r.random() < 0.5)
    return Case(path, _float_rows(r, shape))


def qdq_exposed_head(r, folder):
    """Gemm -> Relu giving an "embedding" graph output that a second Gemm -> Softmax reads:
    onnxruntime runs both Gemms in float32 (a tensor of their QDQ groups is a graph output),
    as in the reference models' heads."""
    k, n, classes = int(r.integers(2, 40)), int(r.integers(2, 20)), int(r.integers(2, 8))
    b = _QDQ(r, np.int8)
    x = b.act("x", "x")
    xs = float(nh.to_array(b.inits[0]))
    w1, ws1 = b.weight("w1", (n, k), n, 0)
    b1 = b.const("b1", r.integers(-3000, 3000, n).astype(np.int32), (np.float32(xs) * ws1).astype(np.float32), 0, 0)
    b.nodes += [oh.make_node("Gemm", [x, w1, b1], ["g1"], name="gemm1", transB=1),
                oh.make_node("Relu", ["g1"], ["emb"], name="relu")]
    es = float(np.float32(r.random() * 0.1 + 0.02))
    b.inits += [_scalar("e_s", es), _scalar("e_z", -128, np.int8)]
    b.nodes += [oh.make_node("QuantizeLinear", ["emb", "e_s", "e_z"], ["e_q"]),
                oh.make_node("DequantizeLinear", ["e_q", "e_s", "e_z"], ["embedding"])]
    w2, ws2 = b.weight("w2", (classes, n), classes, 0)
    b2 = b.const("b2", r.integers(-3000, 3000, classes).astype(np.int32), (np.float32(es) * ws2).astype(np.float32),
                 0, 0)
    b.nodes.append(oh.make_node("Gemm", ["embedding", w2, b2], ["g2"], name="gemm2", transB=1))
    logits = b.act("g2", "logits")
    b.nodes.append(oh.make_node("Softmax", [logits], ["scores"], name="softmax", axis=1))
    shape = ["N" if r.random() < 0.5 else 1, k]
    path = _save(b.nodes, [oh.make_tensor_value_info("x", TP.FLOAT, shape)],
                 [oh.make_tensor_value_info("scores", TP.FLOAT, None), oh.make_tensor_value_info("embedding", TP.FLOAT, None)],
                 b.inits, folder, "qdq_exposed_head", drop_ms=True)
    return Case(path, _float_rows(r, [k]))


def _qdq_pool(r, folder, name, op, attrs, nd_shape):
    b = _QDQ(r, np.int8 if r.random() < 0.7 else np.uint8)
    c = int(r.integers(1, 4))
    x = b.act("x", "x")
    b.nodes.append(oh.make_node(op, [x], ["p"], name=name, **attrs))
    if r.random() < 0.6:  # the input's quantization, as quantize_static writes pools
        y = b.q("p", "y", float(nh.to_array(b.inits[0])), int(nh.to_array(b.inits[1])))
    else:  # another one: a rescale
        y = b.act("p", "y")
    path, shape = b.save(folder, name, [c] + nd_shape, y, r.random() < 0.5)
    return Case(path, _float_rows(r, shape))


def qdq_averagepool(r, folder):
    nd = int(r.integers(1, 3))
    k, size, attrs = _geometry(r, nd, allow_auto=False, dilate=False, pool=True)
    attrs["count_include_pad"] = 1
    return _qdq_pool(r, folder, "qdq_averagepool", "AveragePool", attrs, size)


def qdq_globalaveragepool(r, folder):
    nd = int(r.integers(1, 3))
    return _qdq_pool(r, folder, "qdq_globalaveragepool", "GlobalAveragePool", {},
                     [int(r.integers(1, 12)) for _ in range(nd)])


def qdq_maxpool(r, folder):
    nd = int(r.integers(1, 3))
    k, size, attrs = _geometry(r, nd, pool=True)
    return _qdq_pool(r, folder, "qdq_maxpool", "MaxPool", attrs, size)


def quantize_qdq(float_path: str, out_path: str, calib: np.ndarray, per_channel: bool) -> str:
    """onnxruntime's quantize_static (QDQ, int8, MinMax) calibrated on the rows of calib."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(float_path, out_path, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=per_channel)
    return out_path


def quantize_static_chain(r, folder):
    """A random float graph (Conv, Relu, grouped Conv, Add, Clip, MaxPool or AveragePool,
    GlobalAveragePool, MatMul + Add, Gemm, Softmax) quantized by onnxruntime's quantizer."""
    nd = int(r.integers(1, 3))
    c0, c1 = int(r.integers(1, 4)), 2 * int(r.integers(1, 5))
    size = [int(r.integers(8, 16)) for _ in range(nd)]
    k = [int(r.choice([1, 3, 5]))] * nd
    inits = []

    def p(name, shape, s=0.4):
        inits.append(nh.from_array((r.standard_normal(shape) * s).astype(np.float32), name))
        return name

    pad = [kk // 2 for kk in k] * 2
    pool = "MaxPool" if r.random() < 0.5 else "AveragePool"
    nodes = [oh.make_node("Conv", ["x", p("w1", [c1, c0] + k), p("b1", [c1])], ["c1"], pads=pad, name="conv1"),
             oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             oh.make_node("Conv", ["r1", p("w2", [c1, 2] + k), p("b2", [c1])], ["c2"], pads=pad, group=c1 // 2,
                          name="conv2"),
             oh.make_node("Add", ["r1", "c2"], ["a"], name="add"),
             oh.make_node("Clip", ["a", "lo", "hi"], ["cl"], name="clip"),
             oh.make_node(pool, ["cl"], ["mp"], kernel_shape=[2] * nd, strides=[2] * nd, name="pool"),
             oh.make_node("GlobalAveragePool", ["mp"], ["gap"], name="gap"),
             oh.make_node("Flatten", ["gap"], ["f"], name="flat"),
             oh.make_node("MatMul", ["f", p("w3", [c1, 12])], ["mm"], name="mm"),
             oh.make_node("Add", ["mm", p("b3", [12])], ["mma"], name="mm_bias"),
             oh.make_node("Gemm", ["mma", p("w4", [7, 12]), p("b4", [7])], ["logits"], transB=1, name="gemm"),
             oh.make_node("Softmax", ["logits"], ["scores"], axis=1, name="softmax")]
    inits += [nh.from_array(np.array(-1.0, np.float32), "lo"), nh.from_array(np.array(2.5, np.float32), "hi")]
    fp = _save(nodes, [oh.make_tensor_value_info("x", TP.FLOAT, ["N", c0] + size)],
               [oh.make_tensor_value_info("scores", TP.FLOAT, ["N", 7])], inits, folder, "float_chain", drop_ms=True)
    xs = r.standard_normal([40, c0] + size).astype(np.float32)
    qp = quantize_qdq(fp, str(folder / "quantize_static_chain.onnx"), xs[:32], bool(r.random() < 0.5))
    return Case(qp, xs[32:])


GENERATORS = {f.__name__: f for f in (
    qlinearconv, qlinearmatmul, qgemm, qlinearadd, qlinearaveragepool, qlinearglobalaveragepool, maxpool,
    matmulinteger, convinteger, qdq_conv, qdq_matmul_add, qdq_gemm, qdq_residual_add, qdq_exposed_head, qdq_averagepool,
    qdq_globalaveragepool, qdq_maxpool, quantize_static_chain)}
