"""The graph walk of the ONNX -> .qem compiler: what each graph edge holds, and the
QuantizeLinear that turns a pending float value into integer ops.

Rules: Lowering owns the walk state (env: edge name -> value, shapes, graph inputs); the
integer program lives in Lowering.program; op handlers are plain functions of the
lowering and the node (qis.tools.qem.qdq, qis.tools.qem.qop), found by op type.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from . import format as F
from . import numerics as N
from . import qdq, qop
from .fusion import fusion
from .geometry import window
from .plan import plan
from .program import Operand, Program
from .values import CompileError, Const, FloatInput, Pending, Quantized, Softmaxed, dtype_of, where

HANDLERS = {**qdq.HANDLERS, **qop.HANDLERS}


class Lowering:
    """Walks a topologically sorted ONNX graph and builds a format.QemModel."""

    def __init__(self, model: onnx.ModelProto):
        self.fusion = fusion(model)  # how onnxruntime runs the QDQ groups
        model = onnx.shape_inference.infer_shapes(model)
        self.graph = model.graph
        self.program = Program()
        self.env: dict[str, object] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.unset: set[int] = set()  # int8 graph inputs whose qparams the first reader gives
        self.inputs: list[tuple[str, int]] = []
        for vi in list(self.graph.value_info) + list(self.graph.input) + list(self.graph.output):
            dims = vi.type.tensor_type.shape.dim
            # a symbolic (dynamic) batch is compiled as 1, like a fixed batch of 1
            self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
        for init in self.graph.initializer:
            self.env[init.name] = Const(numpy_helper.to_array(init))
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.env[node.output[0]] = Const(numpy_helper.to_array(node.attribute[0].t))
        init_names = {i.name for i in self.graph.initializer}
        for inp in self.graph.input:
            if inp.name in init_names:
                continue
            et = inp.type.tensor_type.elem_type
            shape = self.shapes[inp.name]
            if et == onnx.TensorProto.FLOAT:
                self.env[inp.name] = FloatInput(inp.name, shape)
            elif et in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
                dt = F.DT_INT8 if et == onnx.TensorProto.INT8 else F.DT_UINT8
                tid = self.program.new_tensor(dt, shape)
                self.unset.add(tid)
                self.inputs.append((inp.name, tid))
                self.env[inp.name] = Quantized(tid)
            else:
                raise CompileError("graph input %r: dtype %s is not supported (float, int8, uint8)"
                                   % (inp.name, onnx.TensorProto.DataType.Name(et)))

    # --- what handlers ask for ---

    def const(self, node, i: int, what: str) -> Const:
        name = node.input[i] if i < len(node.input) else ""
        v = self.env.get(name)
        if not isinstance(v, Const):
            raise CompileError("%s: %s (input %d, %r) must be a constant initializer" % (where(node), what, i, name))
        return v

    def scalar(self, node, i: int, what: str, default=None):
        if (i >= len(node.input) or not node.input[i]) and default is not None:
            return default
        c = self.const(node, i, what).value
        if c.size != 1:
            raise CompileError("%s: %s must be a scalar (per-tensor), got shape %s" % (where(node), what, c.shape))
        return c.reshape(())

    def quantized(self, node, i: int) -> int:
        v = self.env.get(node.input[i])
        if not isinstance(v, Quantized):
            raise CompileError("%s: input %r must be a quantized (int8/uint8) tensor" % (where(node), node.input[i]))
        return v.tid

    def set_qparams(self, tid: int, scale, zp, node) -> None:
        """Give an input tensor its qparams from the first op that reads it, or check them."""
        t = self.program.tensors[tid]
        s, z = float(np.float32(scale)), int(zp)
        if tid in self.unset:
            t.scale, t.zero_point = s, z
            self.unset.discard(tid)
        elif (t.scale, t.zero_point) != (s, z):
            raise CompileError("%s: input qparams (%r, %d) differ from the tensor's (%r, %d)"
                               % (where(node), s, z, t.scale, t.zero_point))

    def describe(self, name: str) -> str:
        """What an edge holds, in words (for messages that say why an input is refused)."""
        v = self.env.get(name)
        if isinstance(v, Pending):
            return {"dq": "a dequantized tensor", "pool": "an average pool", "conv": "a Conv result",
                    "fc": "a MatMul/Gemm result", "add": "an Add result"}[v.kind] + (
                " clamped by Relu/Clip" if v.clamped else "") + " not quantized yet"
        return {Quantized: "a quantized tensor", Const: "a constant", FloatInput: "the float graph input",
                Softmaxed: "Softmax probabilities", type(None): "nothing this compiler computed"}[type(v)]

    def qdq_uint8(self, node) -> bool:
        """Does onnxruntime run this QDQ node's int8 activations as uint8 (see fusion)?"""
        return node.output[0] in self.fusion.uint8_outputs

    def runs_in_float(self, node) -> bool:
        """Does onnxruntime run this node in float32 (its QDQ group not fused)?"""
        return node.output[0] in self.fusion.float_outputs

    # --- a pending float value meets its QuantizeLinear ---

    def materialize(self, node, v: Pending, scale, zp) -> int:
        """Emit the integer ops that compute v quantized to (scale, zp); return the tensor."""
        prog = self.program
        dt = dtype_of(zp.dtype, where(node))
        signed = dt == F.DT_INT8
        sc = np.float32(scale)
        zp = int(zp)
        y = prog.new_tensor(dt, v.shape, float(sc), zp)
        lo, hi = N.clamp_range(signed, float(sc), zp, v.lo, v.hi)
        if v.kind == "dq":
            xt = prog.tensors[v.src[0]]
            if (xt.dtype, np.float32(xt.scale), xt.zero_point, lo, hi) == (dt, sc, zp) + N.qrange(signed):
                prog.drop_last()  # the same quantization: a view
                return prog.view(v.src[0], v.shape)
            prog.lut(v.src[0], y, N.rescale_table(prog.signed(v.src[0]), xt.scale, xt.zero_point, signed, sc, zp,
                                                   lo, hi))
        elif v.kind == "pool":
            self.pool_into(v.info["node"], v.src[0], y, v.info["window"], v.info["count_include_pad"], lo, hi)
        elif v.kind in ("conv", "fc"):
            info = v.info
            node_c = info["node"]
            xs = prog.tensors[v.src[0]].scale
            mults = [N.conv_multiplier(xs, s, sc) for s in np.asarray(info["w_scale"], np.float32).reshape(-1)]
            if v.kind == "conv":
                acc, shape = prog.conv(where(node_c), v.src[0], info["w"], info["wzp"], info["bias"], info["window"],
                                       info["group"], True)
                inner = int(np.prod(shape[2:]))
                geometry = prog.ops[-1].params[:16]
            else:
                acc, shape = prog.fc(where(node_c), v.src[0], info["w"], info["wzp"], info["bias"], True)
                inner, geometry = 1, None
            if not self.runs_in_float(node_c):
                prog.requant(where(node_c), acc, y, mults, inner, lo, hi)
            else:  # onnxruntime's float MatMul/Gemm/Conv: integers, float32 where near a tie
                w = info["w"].reshape(info["w"].shape[0], -1)
                ties = N.fc_tie_lsb(w.shape[1], xs, w, info["wzp"], info["w_scale"], info["bias"],
                                    info.get("bias_scale"), sc)
                wz = np.broadcast_to(np.asarray(info["wzp"], np.int64).reshape(-1), (w.shape[0],))
                bias = np.zeros(w.shape[0]) if info["bias"] is None else np.asarray(info["bias"]).reshape(-1)
                max_acc = (np.abs(bias) + 255 * np.abs(w.astype(np.int64) - wz[:, None]).sum(axis=1)).astype(int)
                prog.requant(where(node_c), acc, y, mults, inner, lo, hi, ties, max_acc.tolist())
                prog.floatfix(where(node_c), v.src[0], acc, y, w, info["wzp"], info["w_scale"], info["bias"],
                              info.get("bias_scale"), lo, hi, geometry)
        elif v.kind == "add":
            self._add(v, y, lo, hi)
        else:
            raise CompileError("internal: cannot materialize %s" % v.kind)
        return y

    def pool_into(self, node, x: int, y: int, win, count_include_pad: int, lo: int, hi: int) -> None:
        """Average pooling of x into y as onnxruntime computes it (see numerics)."""
        prog = self.program
        xt, yt = prog.tensors[x], prog.tensors[y]
        if list(win.kernel) == list(win.in_spatial) and not win.padded:
            # one window over the whole input: onnxruntime's integer global average pool
            acc, count = prog.global_sum(where(node), x)
            prog.requant(where(node), acc, y, [N.gap_multiplier(xt.scale, yt.scale, count)], xt.shape[1], lo, hi)
            return
        if node.op_type == "AveragePool" and self.runs_in_float(node):
            raise CompileError("%s: onnxruntime runs this AveragePool in float32 (its DequantizeLinear/"
                               "QuantizeLinear pair is not fused into QLinearAveragePool), which this runtime "
                               "does not reproduce" % where(node))
        if win.padded and not count_include_pad:
            raise CompileError("%s: a padded average pool needs count_include_pad=1 (the divisor would vary "
                               "along the edges)" % where(node))
        count = int(np.prod(win.kernel))
        prog.avgpool(where(node), x, y, win, count, lo, hi, self.qdq_uint8(node))

    def _add(self, v: Pending, y: int, lo: int, hi: int) -> None:
        add_node = v.info["node"]
        operands = [self._operand(add_node, src) for src in v.src]
        self.program.add(where(add_node), operands[0], operands[1], y, lo, hi, self.runs_in_float(add_node),
                         self.qdq_uint8(add_node))

    def _operand(self, node, src) -> Operand:
        if not isinstance(src, Const):
            return self.program.operand(src)
        if src.scale is None or src.scale.size != 1:
            raise CompileError("%s: a constant operand must be behind a per-tensor DequantizeLinear" % where(node))
        return self.program.constant_operand(src.value, float(np.float32(src.scale.reshape(()))),
                                             int(np.asarray(src.zp).reshape(())), where(node))

    # --- the walk ---

    def run(self) -> F.QemModel:
        for node in self.graph.node:
            if node.op_type == "Constant":
                continue
            if node.domain not in ("", "ai.onnx", "com.microsoft"):
                raise CompileError("%s: domain %r is not supported" % (where(node), node.domain))
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise CompileError("%s: unsupported op type" % where(node))
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            handler(self, node, attrs)
        prog = self.program
        outputs = []
        for out in self.graph.output:
            v = self.env.get(out.name)
            if isinstance(v, Quantized):
                outputs.append((out.name, v.tid, 0))
            elif isinstance(v, Softmaxed):
                outputs.append((out.name, v.tid, F.IOF_SOFTMAX))
            elif isinstance(v, Pending) and v.kind == "dq" and not v.clamped:
                outputs.append((out.name, prog.view(v.src[0], v.shape), 0))
            else:
                raise CompileError("graph output %r is %s, not a quantized tensor, a DequantizeLinear of one, "
                                   "or a Softmax of one" % (out.name, self.describe(out.name)))
        if len(self.inputs) != 1:
            raise CompileError("the graph must have exactly one input reaching the integer ops, got %d"
                               % len(self.inputs))
        arena, scratch = plan(prog.tensors, prog.alias, prog.start, prog.ops, [t for _, t in self.inputs],
                              [t for _, t, _ in outputs])
        return F.QemModel(prog.tensors, prog.ops, self.inputs, outputs, arena, scratch, prog.macs)

    def window_of(self, node, x: int, kernel: list[int], attrs: dict):
        return window(self.program.tensors[x].shape, kernel, attrs, where(node))
