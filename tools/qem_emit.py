"""Integer op emitters of the .qem compiler: tensors, views, conv/fc/pool/add/requant ops.

Emitter is the base of qem_lower.Compiler, which owns the state it uses: tensors, alias,
start (views), ops, env, shapes, unset, macs and the node being lowered (node).
"""
from __future__ import annotations

import math

import numpy as np

from . import qem_format as F
from .qem_ir import CompileError, Const, QT, _geom2d, _pool_geometry, _stored, requant_params


class Emitter:
    """Creates tensors and emits kernel ops with their parameter blocks."""

    # --- tensors ---

    def new_tensor(self, dt: int, shape, scale: float = 1.0, zp: int = 0, flags: int = 0) -> int:
        self.tensors.append(F.Tensor(dt, tuple(int(d) for d in shape), float(scale), int(zp), flags))
        self.alias.append(len(self.tensors) - 1)
        self.start.append(0)
        return len(self.tensors) - 1

    def view(self, tid: int, shape, start: int = 0) -> int:
        """A tensor sharing tid's storage: same elements reshaped, or a slice from `start`."""
        t = self.tensors[tid]
        n = int(np.prod(shape))
        if start + n > t.nelem or (start and t.flags & F.TF_INT32):
            raise CompileError("internal: view of %d elements as %s at %d" % (t.nelem, shape, start))
        v = self.new_tensor(t.dtype, shape, t.scale, t.zero_point, t.flags)
        self.alias[v] = self.alias[tid]
        self.start[v] = self.start[tid] + start
        return v

    def emit(self, op: F.Op) -> None:
        self.ops.append(op)

    # --- helpers ---

    def const(self, node, i: int, what: str) -> Const:
        name = node.input[i] if i < len(node.input) else ""
        v = self.env.get(name)
        if not isinstance(v, Const):
            raise CompileError("%s (%s): %s (input %d, %r) must be a constant initializer"
                               % (node.name, node.op_type, what, i, name))
        return v

    def scalar(self, node, i: int, what: str, default=None):
        if (i >= len(node.input) or not node.input[i]) and default is not None:
            return default
        c = self.const(node, i, what).value
        if c.size != 1:
            raise CompileError("%s (%s): %s must be a scalar (per-tensor), got shape %s"
                               % (node.name, node.op_type, what, c.shape))
        return c.reshape(())

    def qt(self, node, i: int) -> int:
        v = self.env.get(node.input[i])
        if not isinstance(v, QT):
            raise CompileError("%s (%s): input %r must be a quantized (int8/uint8) tensor"
                               % (node.name, node.op_type, node.input[i]))
        return v.tid

    def set_qparams(self, tid: int, scale, zp, node) -> None:
        """Give an input tensor its qparams from the first QLinear op that reads it."""
        t = self.tensors[tid]
        s, z = float(np.float32(scale)), int(zp)
        if tid in self.unset:
            t.scale, t.zero_point = s, z
            self.unset.discard(tid)
        elif (t.scale, t.zero_point) != (s, z):
            raise CompileError("%s (%s): input qparams (%r, %d) differ from the tensor's (%r, %d)"
                               % (node.name, node.op_type, s, z, t.scale, t.zero_point))

    # --- integer op emitters ---

    def emit_requant(self, acc: int, out: int, mults: list[np.float32], inner: int, lo: int, hi: int) -> None:
        t = self.tensors[out]
        try:
            ms = [requant_params(m) for m in mults]
        except ValueError as exc:
            raise CompileError("%s (%s): %s" % (self.node.name, self.node.op_type, exc))
        params = [inner, len(ms), _stored(t.dtype, t.zero_point), _stored(t.dtype, lo), _stored(t.dtype, hi)]
        params += [m for m, _ in ms] + [s for _, s in ms]
        self.emit(F.Op(F.OP_REQUANT, acc, out=out, params=params))

    def clamp_range(self, dt: int, scale: float, zp: int, lo: float, hi: float) -> tuple[int, int]:
        qmin, qmax = (-128, 127) if dt == F.DT_INT8 else (0, 255)
        if lo > -math.inf:
            qmin = max(qmin, int(np.clip(np.rint(np.float32(lo) / np.float32(scale)) + zp, qmin, qmax)))
        if hi < math.inf:
            qmax = min(qmax, int(np.clip(np.rint(np.float32(hi) / np.float32(scale)) + zp, qmin, qmax)))
        return qmin, qmax

    def conv(self, node, x: int, w: np.ndarray, wzp: np.ndarray, bias: np.ndarray | None, attrs: dict,
             out_dt: int | None) -> tuple[int, tuple[int, ...]]:
        """Emit an integer conv into a new int32 tensor (scratch when out_dt is not None)."""
        where = "%s (%s)" % (node.name, node.op_type)
        xt = self.tensors[x]
        if w.ndim not in (3, 4) or w.ndim != len(xt.shape):
            raise CompileError("%s: weight of shape %s does not match input %s (1-D/2-D only)" % (where, w.shape, xt.shape))
        if xt.shape[0] != 1:
            raise CompileError("%s: batch size must be 1, got %d" % (where, xt.shape[0]))
        g = int(attrs.get("group", 1))
        cout, cig = w.shape[0], w.shape[1]
        cin = xt.shape[1]
        if cig * g != cin or cout % g:
            raise CompileError("%s: group=%d does not divide channels %d -> %d" % (where, g, cin, cout))
        ks = list(attrs.get("kernel_shape", w.shape[2:]))
        k, s, d, p, o = _geom2d(*_pool_geometry(node, xt.shape, list(w.shape[2:]), attrs, where))
        if list(ks) != list(w.shape[2:]):
            raise CompileError("%s: kernel_shape %s differs from the weight %s" % (where, ks, w.shape))
        hw = [1] + list(xt.shape[2:]) if len(xt.shape) == 3 else list(xt.shape[2:])
        b = np.zeros(cout, np.int64) if bias is None else bias.astype(np.int64).reshape(-1)
        wz = np.broadcast_to(wzp.reshape(-1), (cout,)).astype(np.int64)
        wd = w.dtype
        wst = (w.astype(np.int16) + (128 if wd == np.int8 else 0)).astype(np.uint8)
        wzs = wz + (128 if wd == np.int8 else 0)
        params = [cin, hw[0], hw[1], cout, o[0], o[1], k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1], g,
                  _stored(xt.dtype, xt.zero_point)] + b.tolist() + wzs.tolist()
        out_shape = (1, cout) + tuple(o[1:] if len(xt.shape) == 3 else o)
        flags = F.TF_INT32 | (F.TF_SCRATCH if out_dt is not None else 0)
        acc = self.new_tensor(F.DT_INT32, out_shape, flags=flags)
        self.emit(F.Op(F.OP_CONV, x, out=acc, weights=wst.tobytes(), params=params))
        self.macs += cout * o[0] * o[1] * cig * k[0] * k[1]
        return acc, out_shape

    def fc(self, node, x: int, w_nk: np.ndarray, wzp: np.ndarray, bias: np.ndarray | None,
           out_dt: int | None) -> tuple[int, tuple[int, ...]]:
        """Emit y[M,N] = x[M,K] . w[N,K]^T + bias into a new int32 tensor."""
        xt = self.tensors[x]
        n, k = w_nk.shape
        if xt.shape[-1] != k:
            raise CompileError("%s (%s): input %s does not match weight K=%d" % (node.name, node.op_type, xt.shape, k))
        m = xt.nelem // k
        b = np.zeros(n, np.int64) if bias is None else np.broadcast_to(bias.astype(np.int64).reshape(-1), (n,))
        wz = np.broadcast_to(wzp.reshape(-1), (n,)).astype(np.int64)
        wd = w_nk.dtype
        wst = (w_nk.astype(np.int16) + (128 if wd == np.int8 else 0)).astype(np.uint8)
        xz = _stored(xt.dtype, xt.zero_point)
        wzs = wz + (128 if wd == np.int8 else 0)
        folded = b - xz * wst.astype(np.int64).sum(axis=1) + k * xz * wzs  # see kernels.fc
        if np.abs(folded).max(initial=0) >= 2**31:
            raise CompileError("%s (%s): folded bias overflows int32" % (node.name, node.op_type))
        params = [m, k, n, xz] + folded.tolist() + wzs.tolist()
        out_shape = tuple(xt.shape[:-1]) + (n,)
        flags = F.TF_INT32 | (F.TF_SCRATCH if out_dt is not None else 0)
        acc = self.new_tensor(F.DT_INT32, out_shape, flags=flags)
        self.emit(F.Op(F.OP_FC, x, out=acc, weights=np.ascontiguousarray(wst).tobytes(), params=params))
        self.macs += m * n * k
        return acc, out_shape

    def avgsum(self, node, x: int, kernel, attrs: dict) -> tuple[int, tuple[int, ...], int]:
        """Emit window sums of (x - zp); returns (acc tensor, out shape, window size)."""
        where = "%s (%s)" % (node.name, node.op_type)
        xt = self.tensors[x]
        if attrs.get("dilations") and set(attrs["dilations"]) != {1}:
            raise CompileError("%s: dilated average pooling is not supported" % where)
        k, s, _d, p, o = _pool_geometry(node, xt.shape, list(kernel), attrs, where)
        if any(p) and not attrs.get("count_include_pad", 0):
            raise CompileError("%s: padded AveragePool needs count_include_pad=1" % where)
        k, s, _d, p, o = _geom2d(k, s, _d, p, o)
        hw = [1] + list(xt.shape[2:]) if len(xt.shape) == 3 else list(xt.shape[2:])
        params = [xt.shape[1], hw[0], hw[1], o[0], o[1], k[0], k[1], s[0], s[1], p[0], p[1],
                  _stored(xt.dtype, xt.zero_point)]
        out_shape = (1, xt.shape[1]) + tuple(o[1:] if len(xt.shape) == 3 else o)
        acc = self.new_tensor(F.DT_INT32, out_shape, flags=F.TF_INT32 | F.TF_SCRATCH)
        self.emit(F.Op(F.OP_AVGSUM, x, out=acc, params=params))
        return acc, out_shape, k[0] * k[1]

    def maxpool(self, node, x: int, attrs: dict) -> int:
        where = "%s (%s)" % (node.name, node.op_type)
        if len(node.output) > 1 and node.output[1]:
            raise CompileError("%s: the Indices output is not supported" % where)
        if attrs.get("storage_order", 0):
            raise CompileError("%s: storage_order=1 is not supported" % where)
        xt = self.tensors[x]
        k, s, d, p, o = _geom2d(*_pool_geometry(node, xt.shape, list(attrs["kernel_shape"]), attrs, where))
        hw = [1] + list(xt.shape[2:]) if len(xt.shape) == 3 else list(xt.shape[2:])
        out_shape = (1, xt.shape[1]) + tuple(o[1:] if len(xt.shape) == 3 else o)
        y = self.new_tensor(xt.dtype, out_shape, xt.scale, xt.zero_point)
        params = [xt.shape[1], hw[0], hw[1], o[0], o[1], k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1]]
        self.emit(F.Op(F.OP_MAXPOOL, x, out=y, params=params))
        return y

    def add(self, node, a: int, b: int, y: int, lo: int, hi: int) -> None:
        ta, tb, ty = self.tensors[a], self.tensors[b], self.tensors[y]
        if ta.nelem != tb.nelem:
            raise CompileError("%s (%s): broadcasting %s + %s is not supported"
                               % (node.name, node.op_type, ta.shape, tb.shape))
        ra = np.float32(ta.scale) / np.float32(ty.scale)
        rb = np.float32(tb.scale) / np.float32(ty.scale)
        shift = 24 - max(math.frexp(float(ra))[1], math.frexp(float(rb))[1])
        params = [ta.nelem, _stored(ta.dtype, ta.zero_point), _stored(tb.dtype, tb.zero_point),
                  _stored(ty.dtype, ty.zero_point), _stored(ty.dtype, lo), _stored(ty.dtype, hi),
                  int(round(float(ra) * 2.0**shift)), int(round(float(rb) * 2.0**shift)), shift]
        self.emit(F.Op(F.OP_ADD, a, b, y, params=params))
