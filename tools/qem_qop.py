"""QOperator-format handlers of the .qem compiler (QLinear*, com.microsoft Q*, *Integer)."""
from __future__ import annotations

import math

import numpy as np

from .qem_ir import CompileError, QT, Softmaxed, _dtype_of


class QOperatorOps:
    """op_<OpType> handlers for graphs already in integer form; mixed into Compiler."""

    # --- op handlers: QOperator world ---

    def _qout(self, node, i_scale: int, i_zp: int, shape) -> int:
        zp = self.scalar(node, i_zp, "y_zero_point")
        return self.new_tensor(_dtype_of(zp.dtype, node.name), shape, float(np.float32(self.scalar(node, i_scale, "y_scale"))), int(zp))

    def _qlinear(self, node, x: int, x_scale, x_zp):
        self.set_qparams(x, x_scale, x_zp, node)

    def op_QLinearConv(self, node, attrs):
        x = self.qt(node, 0)
        self._qlinear(node, x, self.scalar(node, 1, "x_scale"), self.scalar(node, 2, "x_zero_point"))
        w = self.const(node, 3, "w").value
        ws = self.const(node, 4, "w_scale").value.astype(np.float32)
        wz = self.const(node, 5, "w_zero_point").value
        bias = self.const(node, 8, "B").value if len(node.input) > 8 and node.input[8] else None
        acc, shape = self.conv(node, x, w, wz, bias, attrs, 0)
        y = self._qout(node, 6, 7, shape)
        xs, ys = np.float32(self.tensors[x].scale), np.float32(self.tensors[y].scale)
        self.emit_requant(acc, y, [np.float32(np.float32(xs * s) / ys) for s in ws.reshape(-1)],
                          int(np.prod(shape[2:])), *self.clamp_range(self.tensors[y].dtype, 1, 0, -math.inf, math.inf))
        self.env[node.output[0]] = QT(y)

    def _qfc(self, node, x: int, w_nk, ws, wz, bias, iy: int, izp: int):
        acc, shape = self.fc(node, x, w_nk, wz, bias, 0)
        y = self._qout(node, iy, izp, shape)
        xs, ys = np.float32(self.tensors[x].scale), np.float32(self.tensors[y].scale)
        self.emit_requant(acc, y, [np.float32(np.float32(xs * s) / ys) for s in ws.reshape(-1)], 1,
                          *self.clamp_range(self.tensors[y].dtype, 1, 0, -math.inf, math.inf))
        self.env[node.output[0]] = QT(y)

    def op_QLinearMatMul(self, node, attrs):
        x = self.qt(node, 0)
        self._qlinear(node, x, self.scalar(node, 1, "a_scale"), self.scalar(node, 2, "a_zero_point"))
        b = self.const(node, 3, "b").value
        ws = self.const(node, 4, "b_scale").value.astype(np.float32)
        wz = self.const(node, 5, "b_zero_point").value
        xt = self.tensors[x]
        if b.ndim == 2:
            self._qfc(node, x, np.ascontiguousarray(b.T), ws, wz, None, 6, 7)
            return
        if b.ndim != 3 or len(xt.shape) != 3 or xt.shape[0] != b.shape[0] or ws.size > 1 or wz.size > 1:
            raise CompileError("%s (QLinearMatMul): b must be 2-D, or 3-D with a's batch and per-tensor "
                               "quantization; got a %s, b %s" % (node.name, xt.shape, b.shape))
        nb, m, k = xt.shape
        n = b.shape[2]
        y = self._qout(node, 6, 7, (nb, m, n))
        for i in range(nb):
            acc, _ = self.fc(node, self.view(x, (m, k), i * m * k), np.ascontiguousarray(b[i].T), wz, None, 0)
            mult = np.float32(np.float32(np.float32(xt.scale) * ws.reshape(-1)[0]) / np.float32(self.tensors[y].scale))
            self.emit_requant(acc, self.view(y, (m, n), i * m * n), [mult], 1,
                              *self.clamp_range(self.tensors[y].dtype, 1, 0, -math.inf, math.inf))
        self.env[node.output[0]] = QT(y)

    def op_QGemm(self, node, attrs):
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            raise CompileError("%s (QGemm): transA=1 or alpha != 1 is not supported" % node.name)
        if len(node.input) < 8 or not node.input[7]:
            raise CompileError("%s (QGemm): a float (unquantized) output is not supported" % node.name)
        x = self.qt(node, 0)
        self._qlinear(node, x, self.scalar(node, 1, "a_scale"), self.scalar(node, 2, "a_zero_point"))
        b = self.const(node, 3, "B").value
        ws = self.const(node, 4, "b_scale").value.astype(np.float32)
        wz = self.const(node, 5, "b_zero_point").value
        bias = self.const(node, 6, "C").value if node.input[6] else None
        w = b if attrs.get("transB", 0) else b.T
        self._qfc(node, x, np.ascontiguousarray(w), ws, wz, bias, 7, 8)

    def op_QLinearAdd(self, node, attrs):
        a, b = self.qt(node, 0), self.qt(node, 3)
        self._qlinear(node, a, self.scalar(node, 1, "A_scale"), self.scalar(node, 2, "A_zero_point"))
        self._qlinear(node, b, self.scalar(node, 4, "B_scale"), self.scalar(node, 5, "B_zero_point"))
        y = self._qout(node, 6, 7, self.tensors[a].shape)
        self.add(node, a, b, y, *self.clamp_range(self.tensors[y].dtype, 1, 0, -math.inf, math.inf))
        self.env[node.output[0]] = QT(y)

    def op_QLinearGlobalAveragePool(self, node, attrs):
        if attrs.get("channels_last", 0):
            raise CompileError("%s (QLinearGlobalAveragePool): channels_last=1 is not supported" % node.name)
        x = self.qt(node, 0)
        self._qlinear(node, x, self.scalar(node, 1, "x_scale"), self.scalar(node, 2, "x_zero_point"))
        xt = self.tensors[x]
        acc, shape, count = self.avgsum(node, x, list(xt.shape[2:]), {})
        y = self._qout(node, 3, 4, shape)
        mult = np.float32(np.float64(np.float32(xt.scale)) / (count * np.float64(self.tensors[y].scale)))
        self.emit_requant(acc, y, [mult], self.tensors[y].nelem, *self.clamp_range(self.tensors[y].dtype, 1, 0, -math.inf, math.inf))
        self.env[node.output[0]] = QT(y)

    def op_QLinearSoftmax(self, node, attrs):
        x = self.qt(node, 0)
        self._qlinear(node, x, self.scalar(node, 1, "X_scale"), self.scalar(node, 2, "x_zero_point"))
        if attrs.get("axis", -1) not in (-1, len(self.tensors[x].shape) - 1):
            raise CompileError("%s (QLinearSoftmax): only a last-axis Softmax is supported" % node.name)
        self.env[node.output[0]] = Softmaxed(x)  # may feed only a DequantizeLinear or the output

    def _integer(self, node, attrs, conv: bool):
        x = self.qt(node, 0)
        xz = int(self.scalar(node, 2, "x_zero_point", np.array(0)))
        if x in self.unset:
            self.tensors[x].zero_point = xz
            self.unset.discard(x)
        elif self.tensors[x].zero_point != xz:
            raise CompileError("%s (%s): x_zero_point %d differs from the tensor's %d"
                               % (node.name, node.op_type, xz, self.tensors[x].zero_point))
        w = self.const(node, 1, "w").value
        wz = self.const(node, 3, "w_zero_point").value if len(node.input) > 3 and node.input[3] else np.zeros(1, w.dtype)
        if conv:
            acc, _ = self.conv(node, x, w, wz, None, attrs, None)
        else:
            if w.ndim != 2:
                raise CompileError("%s (MatMulInteger): B must be 2-D, got %s" % (node.name, w.shape))
            acc, _ = self.fc(node, x, np.ascontiguousarray(w.T), wz, None, None)
        self.env[node.output[0]] = QT(acc)

    def op_ConvInteger(self, node, attrs):
        self._integer(node, attrs, True)

    def op_MatMulInteger(self, node, attrs):
        self._integer(node, attrs, False)
