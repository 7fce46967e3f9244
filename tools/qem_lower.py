"""Lowering of a quantized ONNX graph to .qem integer ops (QDQ patterns and graph walk).

QDQ values stay pending (FD) until the QuantizeLinear that gives them an output scale;
QOperator ops are handled by QOperatorOps (qem_qop.py), the kernels' ops by Emitter.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from . import qem_format as F
from .qem_emit import Emitter
from .qem_ir import FD, QT, CompileError, Const, FloatIn, Softmaxed, _dtype_of
from .qem_plan import plan
from .qem_qop import QOperatorOps


class Compiler(Emitter, QOperatorOps):
    """Walks a topologically sorted ONNX graph and emits a qem_format.QemModel."""

    def __init__(self, model: onnx.ModelProto):
        model = onnx.shape_inference.infer_shapes(model)
        self.graph = model.graph
        self.tensors: list[F.Tensor] = []
        self.alias: list[int] = []  # base tensor of a view, or itself
        self.start: list[int] = []  # element offset of a view into its base
        self.ops: list[F.Op] = []
        self.env: dict[str, object] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.macs = 0
        for vi in list(self.graph.value_info) + list(self.graph.input) + list(self.graph.output):
            dims = vi.type.tensor_type.shape.dim
            self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
        for init in self.graph.initializer:
            self.env[init.name] = Const(numpy_helper.to_array(init))
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.env[node.output[0]] = Const(numpy_helper.to_array(node.attribute[0].t))
        init_names = {i.name for i in self.graph.initializer}
        self.unset: set[int] = set()  # int8 graph inputs whose qparams the first reader gives
        self.inputs: list[tuple[str, int]] = []
        for inp in self.graph.input:
            if inp.name in init_names:
                continue
            et = inp.type.tensor_type.elem_type
            shape = self.shapes[inp.name]
            if et == onnx.TensorProto.FLOAT:
                self.env[inp.name] = FloatIn(inp.name, shape)
            elif et in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
                dt = F.DT_INT8 if et == onnx.TensorProto.INT8 else F.DT_UINT8
                tid = self.new_tensor(dt, shape)
                self.unset.add(tid)
                self.inputs.append((inp.name, tid))
                self.env[inp.name] = QT(tid)
            else:
                raise CompileError("graph input %r: dtype %s is not supported (float, int8, uint8)"
                                   % (inp.name, onnx.TensorProto.DataType.Name(et)))


    # --- materializing a pending float value at its QuantizeLinear ---

    def materialize(self, node, v: FD, scale, zp) -> int:
        dt = _dtype_of(zp.dtype, "%s (%s)" % (node.name, node.op_type))
        sc = np.float32(scale)
        zp = int(zp)
        y = self.new_tensor(dt, v.shape, float(sc), zp)
        lo, hi = self.clamp_range(dt, float(sc), zp, v.lo, v.hi)
        if v.kind == "dq" and lo == (-128 if dt == F.DT_INT8 else 0) and hi == lo + 255:
            xt = self.tensors[v.src[0]]
            if (xt.dtype, np.float32(xt.scale), xt.zero_point) == (dt, sc, zp):
                self.tensors.pop()
                self.alias.pop()
                self.start.pop()
                return self.view(v.src[0], v.shape)
        if v.kind in ("dq", "pool"):
            x = v.src[0]
            xt = self.tensors[x]
            if v.kind == "dq":
                acc, _, count = self.avgsum(node, self.view(x, (1, xt.nelem, 1)), [1], {})
            else:
                acc, _, count = self.avgsum(v.info["node"], x, v.info["kernel"], v.info["attrs"])
            mult = np.float32(np.float64(np.float32(xt.scale)) / (count * np.float64(sc)))
            self.emit_requant(acc, y, [mult], self.tensors[y].nelem, lo, hi)
        elif v.kind in ("conv", "fc"):
            xs = np.float32(self.tensors[v.src[0]].scale)
            ws = np.asarray(v.info["w_scale"], np.float32).reshape(-1)
            mults = [np.float32(np.float32(xs * s) / sc) for s in ws]
            if v.kind == "conv":
                acc, shape = self.conv(v.info["node"], v.src[0], v.info["w"], v.info["wzp"], v.info["bias"],
                                       v.info["attrs"], dt)
                inner = int(np.prod(shape[2:]))
            else:
                acc, shape = self.fc(v.info["node"], v.src[0], v.info["w"], v.info["wzp"], v.info["bias"], dt)
                inner = 1
            self.emit_requant(acc, y, mults, inner, lo, hi)
        elif v.kind == "add":
            self.add(v.info["node"], v.src[0], v.src[1], y, lo, hi)
        else:
            raise CompileError("internal: cannot materialize %s" % v.kind)
        return y

    # --- the walk ---

    def run(self) -> F.QemModel:
        for node in self.graph.node:
            if node.op_type == "Constant":
                continue
            if node.domain not in ("", "ai.onnx", "com.microsoft"):
                raise CompileError("%s (%s): domain %r is not supported" % (node.name, node.op_type, node.domain))
            handler = getattr(self, "op_" + node.op_type, None)
            if handler is None:
                raise CompileError("%s (%s): unsupported op type" % (node.name or "<unnamed>", node.op_type))
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            self.node = node
            handler(node, attrs)
        outputs = []
        for out in self.graph.output:
            v = self.env.get(out.name)
            if isinstance(v, QT):
                outputs.append((out.name, v.tid, 0))
            elif isinstance(v, Softmaxed):
                outputs.append((out.name, v.tid, F.IOF_SOFTMAX))
            elif isinstance(v, FD) and v.kind == "dq":
                outputs.append((out.name, self.view(v.src[0], v.shape), 0))
            else:
                raise CompileError("graph output %r is not a quantized tensor, a DequantizeLinear of one, "
                                   "or a Softmax of one" % out.name)
        if len(self.inputs) != 1:
            raise CompileError("the graph must have exactly one input reaching the integer ops, got %d"
                               % len(self.inputs))
        arena, scratch = plan(self.tensors, self.alias, self.start, self.ops, [t for _, t in self.inputs],
                              [t for _, t, _ in outputs])
        return F.QemModel(self.tensors, self.ops, self.inputs, outputs, arena, scratch, self.macs)

    # --- op handlers: QDQ world ---

    def op_QuantizeLinear(self, node, attrs):
        v = self.env.get(node.input[0])
        scale = self.scalar(node, 1, "y_scale")
        zp = self.scalar(node, 2, "y_zero_point", np.array(0, np.uint8))
        if attrs.get("saturate", 1) != 1 or zp.dtype not in (np.int8, np.uint8):
            raise CompileError("%s (%s): output dtype %s is not supported (int8, uint8)" % (node.name, node.op_type, zp.dtype))
        if isinstance(v, Softmaxed):  # probabilities re-quantized for the output: keep the logits
            self.env[node.output[0]] = v
        elif isinstance(v, FloatIn):
            tid = self.new_tensor(_dtype_of(zp.dtype, node.name), v.shape, float(np.float32(scale)), int(zp))
            self.inputs.append((v.name, tid))
            self.env[node.output[0]] = QT(tid)
        elif isinstance(v, FD):
            self.env[node.output[0]] = QT(self.materialize(node, v, scale, zp))
        else:
            raise CompileError("%s (%s): input %r is neither the float graph input nor a value computed "
                               "from dequantized tensors" % (node.name, node.op_type, node.input[0]))

    def op_DequantizeLinear(self, node, attrs):
        v = self.env.get(node.input[0])
        if isinstance(v, Const):
            scale = self.const(node, 1, "x_scale").value.astype(np.float32)
            zp = (self.const(node, 2, "x_zero_point").value if len(node.input) > 2 and node.input[2]
                  else np.zeros_like(scale, dtype=v.value.dtype))
            if v.value.dtype not in (np.int8, np.uint8, np.int32):
                raise CompileError("%s (%s): constant dtype %s is not supported" % (node.name, node.op_type, v.value.dtype))
            self.env[node.output[0]] = Const(v.value, scale, zp, int(attrs.get("axis", 1)))
        elif isinstance(v, Softmaxed):
            self.env[node.output[0]] = v
        elif isinstance(v, QT):
            t = self.tensors[v.tid]
            self.set_qparams(v.tid, self.scalar(node, 1, "x_scale"), self.scalar(node, 2, "x_zero_point", np.array(0)), node)
            self.env[node.output[0]] = FD("dq", [v.tid], t.shape)
        else:
            raise CompileError("%s (%s): input %r is not a quantized tensor or constant"
                               % (node.name, node.op_type, node.input[0]))

    def _plain_fd(self, node, i: int) -> FD:
        v = self.env.get(node.input[i])
        if not isinstance(v, FD) or v.kind != "dq" or v.lo > -math.inf or v.hi < math.inf:
            raise CompileError("%s (%s): input %r must come straight from a DequantizeLinear"
                               % (node.name, node.op_type, node.input[i]))
        return v

    def _dq_weight(self, node, i: int, what: str, channel_axis: int) -> Const:
        c = self.const(node, i, what)
        if c.scale is None or c.value.dtype not in (np.int8, np.uint8):
            raise CompileError("%s (%s): %s must be an int8/uint8 initializer behind a DequantizeLinear"
                               % (node.name, node.op_type, what))
        if c.scale.size > 1 and c.axis % c.value.ndim != channel_axis:
            raise CompileError("%s (%s): per-channel %s scales must be along axis %d, got axis %d"
                               % (node.name, node.op_type, what, channel_axis, c.axis))
        return c

    def _dq_bias(self, node, i: int) -> np.ndarray | None:
        if i >= len(node.input) or not node.input[i]:
            return None
        c = self.const(node, i, "bias")
        if c.scale is None or c.value.dtype != np.int32:
            raise CompileError("%s (%s): bias must be an int32 initializer behind a DequantizeLinear"
                               % (node.name, node.op_type))
        return c.value

    def op_Conv(self, node, attrs):
        x = self._plain_fd(node, 0)
        w = self._dq_weight(node, 1, "weight", 0)
        bias = self._dq_bias(node, 2)
        info = dict(node=node, w=w.value, wzp=np.asarray(w.zp), w_scale=w.scale, bias=bias, attrs=attrs)
        self.env[node.output[0]] = FD("conv", [x.src[0]], self.shapes.get(node.output[0], ()), info)

    def _fc_fd(self, node, w_nk: np.ndarray, c: Const, bias):
        x = self._plain_fd(node, 0)
        info = dict(node=node, w=w_nk, wzp=np.asarray(c.zp), w_scale=c.scale, bias=bias)
        shape = tuple(x.shape[:-1]) + (w_nk.shape[0],)
        self.env[node.output[0]] = FD("fc", [x.src[0]], shape, info)

    def op_MatMul(self, node, attrs):
        c = self._dq_weight(node, 1, "B", 1)
        if c.value.ndim != 2:
            raise CompileError("%s (MatMul): B must be 2-D, got %s" % (node.name, c.value.shape))
        self._fc_fd(node, np.ascontiguousarray(c.value.T), c, None)

    def op_Gemm(self, node, attrs):
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise CompileError("%s (Gemm): transA=1, alpha != 1 or beta != 1 is not supported" % node.name)
        c = self._dq_weight(node, 1, "B", 0 if attrs.get("transB", 0) else 1)
        w = c.value if attrs.get("transB", 0) else c.value.T
        self._fc_fd(node, np.ascontiguousarray(w), c, self._dq_bias(node, 2))

    def op_Add(self, node, attrs):
        a, b = self._plain_fd(node, 0), self._plain_fd(node, 1)
        self.env[node.output[0]] = FD("add", [a.src[0], b.src[0]], a.shape, dict(node=node))

    def _activation(self, node, lo: float, hi: float):
        v = self.env.get(node.input[0])
        if not isinstance(v, FD) or v.kind == "pool":
            raise CompileError("%s (%s): must follow a Conv/MatMul/Gemm/Add or DequantizeLinear in a QDQ graph"
                               % (node.name, node.op_type))
        self.env[node.output[0]] = FD(v.kind, v.src, v.shape, v.info, max(v.lo, lo), min(v.hi, hi))

    def op_Relu(self, node, attrs):
        self._activation(node, 0.0, math.inf)

    def op_Clip(self, node, attrs):
        lo = attrs.get("min", -math.inf)
        hi = attrs.get("max", math.inf)
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.scalar(node, 1, "min"))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.scalar(node, 2, "max"))
        self._activation(node, lo, hi)

    def _pool(self, node, attrs, kernel):
        v = self.env.get(node.input[0])
        if isinstance(v, FD):
            v = self._plain_fd(node, 0)
            info = dict(node=node, kernel=kernel(self.tensors[v.src[0]].shape), attrs=attrs)
            self.env[node.output[0]] = FD("pool", [v.src[0]], self.shapes.get(node.output[0], ()), info)
        else:
            raise CompileError("%s (%s): input must be dequantized (QDQ); use QLinear ops otherwise"
                               % (node.name, node.op_type))

    def op_AveragePool(self, node, attrs):
        self._pool(node, attrs, lambda shape: list(attrs["kernel_shape"]))

    def op_GlobalAveragePool(self, node, attrs):
        self._pool(node, {}, lambda shape: list(shape[2:]))

    def op_MaxPool(self, node, attrs):
        v = self.env.get(node.input[0])
        if isinstance(v, FD):
            v = self._plain_fd(node, 0)
            y = self.maxpool(node, v.src[0], attrs)
            self.env[node.output[0]] = FD("dq", [y], self.tensors[y].shape)
        else:
            self.env[node.output[0]] = QT(self.maxpool(node, self.qt(node, 0), attrs))

    def _reshape(self, node, attrs):
        v = self.env.get(node.input[0])
        shape = self.shapes.get(node.output[0])
        if not shape:
            raise CompileError("%s (%s): output shape unknown (run shape inference)" % (node.name, node.op_type))
        if isinstance(v, QT):
            self.env[node.output[0]] = QT(self.view(v.tid, shape))
        elif isinstance(v, FD) and v.kind == "dq":
            self.env[node.output[0]] = FD("dq", [self.view(v.src[0], shape)], shape, lo=v.lo, hi=v.hi)
        elif isinstance(v, FD) and v.kind == "pool":
            self.env[node.output[0]] = FD("pool", v.src, shape, v.info, v.lo, v.hi)
        else:
            raise CompileError("%s (%s): input %r must be a quantized or dequantized tensor"
                               % (node.name, node.op_type, node.input[0]))

    op_Flatten = op_Reshape = op_Squeeze = op_Unsqueeze = _reshape

    def op_Softmax(self, node, attrs):
        v = self._plain_fd(node, 0)
        axis = attrs.get("axis", -1)
        if axis not in (-1, len(v.shape) - 1):
            raise CompileError("%s (Softmax): only a last-axis Softmax is supported" % node.name)
        self.env[node.output[0]] = Softmaxed(self.view(v.src[0], v.shape))
