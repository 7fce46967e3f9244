# Runs a compiled int8 edge model (.qem, written by `qis model compile`).
#
# State rules:
# - Everything is allocated in Model(path): the activation arena, the shared int32
#   scratch, one column buffer shared by every conv, one output array per output, and
#   every memoryview a kernel needs. run() allocates nothing (checked under MicroPython
#   with gc.mem_alloc).
# - Weights are views into the bytes given to Model(bytes) (frozen firmware keeps those
#   in flash: no copy in RAM); from a file they are copied into one buffer of their own
#   and the rest of the file is not kept (its parameter blocks live on as int32 arrays).
# - output(name) returns the SAME array object after every run(): copy it if you need it
#   after the next run().
# - 8-bit tensors live in the arena in "stored" form (int8 biased by +128, see kernels);
#   inputs and outputs are converted at the API edge.
# - A bad file raises ModelError naming what is wrong; nothing is asserted.
import binascii
import struct
from array import array

from . import kernels
from .compat import const, zeros
from .errors import ModelError



VERSION = const(4)
_HEADER = "<4sHHIIHHHHII"
_HEADER_LEN = const(32)
_TENSOR = "<BBBBIIHHHHfi"
_TENSOR_LEN = const(28)
_OP = "<BBHHHIIII"
_OP_LEN = const(24)
_DT_INT8 = const(0)
_DT_INT32 = const(2)
_TF_INT32 = const(1)
_TF_SCRATCH = const(2)
_NONE = const(0xFFFF)
_IOF_SOFTMAX = const(1)
_OP_CONV = const(1)
_OP_FC = const(2)
_OP_REQUANT = const(3)
_OP_MAXPOOL = const(4)
_OP_AVGSUM = const(5)
_OP_ADD = const(6)
_OP_LUT = const(7)
_OP_AVGPOOL = const(8)
_OP_FCFIX = const(9)
_E = 2.718281828459045  # e, so that topk() needs no math module


def _check(ok, msg, *args):
    if not ok:
        raise ModelError(msg % args)


class _File:
    """A model file read in parts: the heap holds its tables, weights and parameters,
    never the whole file (and no temporary copy of a part, which would fragment it)."""

    def __init__(self, path):
        try:
            self._f = open(path, "rb")
            self.size = self._f.seek(0, 2)
        except OSError as exc:
            raise ModelError("cannot read model file %s: %s" % (path, exc))

    def _into(self, off, buf, nbytes):
        self._f.seek(off)
        if self._f.readinto(buf) != nbytes:
            raise ModelError("model file truncated at byte %d" % off)
        return buf

    def crc(self):
        """CRC32 of all but the last 4 bytes, read through a small buffer."""
        self._f.seek(0)
        buf = memoryview(bytearray(256))
        crc, left = 0, self.size - 4
        while left > 0:
            n = self._f.readinto(buf[: min(256, left)])
            _check(n > 0, "model file truncated")
            crc = binascii.crc32(buf[:n], crc)
            left -= n
        return crc & 0xFFFFFFFF

    def read(self, off, n, into=None):
        return self._into(off, bytearray(n) if into is None else into, n)

    def words(self, off, count):
        return self._into(off, array("i", range(count)), 4 * count)

    def close(self):
        self._f.close()


class _Bytes:
    """A model held in a bytes object (a frozen module's constant stays in flash): parts
    are views into it, only the parameter blocks are copied (kernels write scratch there)."""

    def __init__(self, data):
        self._data = data
        self.size = len(data)

    def crc(self):
        return binascii.crc32(memoryview(self._data)[: self.size - 4]) & 0xFFFFFFFF

    def read(self, off, n, into=None):
        return memoryview(self._data)[off : off + n]

    def words(self, off, count):
        # Filled in place, word by word: a slice would be a temporary of the same size
        # beside the array (a hole a small heap may not close), and array() reads a
        # memoryview (a model in a ROMFS image) item by item, one int per byte.
        out = zeros("i", count)
        data = self._data
        for i in range(count):
            out[i] = struct.unpack_from("<i", data, off + 4 * i)[0]
        return out

    def close(self):
        pass


class Model:
    """A loaded .qem model with its preallocated buffers.

    Typical loop: m.quantize_input(values) (or m.set_input_q(int8_bytes)); m.run();
    m.argmax("scores"); m.output("embedding") -> int8 array (reused).
    """

    def __init__(self, path_or_bytes):
        src = _Bytes(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray, memoryview)) else _File(path_or_bytes)
        try:
            self._load(src)
        finally:
            src.close()

    def _load(self, src):
        # The large buffers are made first and one after another (parameters, weights,
        # columns, arena, scratch), before the small objects and the parsing garbage: on a
        # board's small heap, garbage between them would leave holes too small for the
        # large buffers the application makes next.
        n = src.size
        _check(n >= _HEADER_LEN + 4, "model file truncated: %d bytes, header needs %d", n, _HEADER_LEN + 4)
        (magic, version, _flags, size, arena, nt, nops, nin, nout, scratch,
         macs) = struct.unpack_from(_HEADER, src.read(0, _HEADER_LEN), 0)
        _check(magic == b"QEMF", "not an edge model file: magic %r, expected b'QEMF'", magic)
        _check(version == VERSION, "model format version %d, this runtime reads version %d", version, VERSION)
        _check(size == n, "model file truncated or padded: %d bytes, header says %d", n, size)
        crc = struct.unpack_from("<I", src.read(n - 4, 4), 0)[0]
        _check(src.crc() == crc, "model file corrupted: CRC32 mismatch")
        # The tables: header, tensors, io names (at most 255 bytes each), ops.
        data = src.read(0, min(n - 4, _HEADER_LEN + nt * _TENSOR_LEN + (nin + nout) * 264 + nops * _OP_LEN))
        end = len(data)
        _check(_HEADER_LEN + nt * _TENSOR_LEN <= end, "model file corrupted: tensor table overruns the file")
        pos = io_pos = _HEADER_LEN + nt * _TENSOR_LEN
        for _ in range(nin + nout):
            _check(pos + 5 <= end and pos + 5 + data[pos + 4] <= end, "model file corrupted: io table overruns the file")
            pos = (pos + 5 + data[pos + 4] + 3) & ~3
        _check(pos + nops * _OP_LEN <= end, "model file corrupted: op table overruns the file")
        ops = []
        weights = 0
        for _ in range(nops):
            op = struct.unpack_from(_OP, data, pos)
            pos += _OP_LEN
            _check(op[5] + op[6] <= n - 4 and op[7] + 4 * op[8] <= n - 4, "model file corrupted: op data outside the file")
            for tid in op[2:5]:
                _check(tid == _NONE or tid < nt, "model file corrupted: op names tensor %d of %d", tid, nt)
            ops.append(op)
            weights += op[6]
        params = [src.words(op[7], op[8]) for op in ops]
        # A file's weights go into one buffer of their own; bytes are viewed where they are.
        blob = memoryview(bytearray(weights)) if isinstance(src, _File) else None
        cols = 0
        for i in range(nops):
            p = params[i]
            if ops[i][0] == _OP_CONV:  # its column buffer: output width * taps per window
                cols = max(cols, p[5] * (p[0] // p[14]) * p[6] * p[7])
        self._cols = bytearray(cols)  # shared: the convs run one after another
        self.macs = macs
        self.arena_bytes = arena
        self._arena = bytearray(arena)
        self._scratch = zeros("i", max(scratch, 1))
        amv = memoryview(self._arena)
        tensors = []
        pos = _HEADER_LEN
        for _ in range(nt):
            (dt, ndim, tf, _p, off, cnt, d0, d1, d2, d3, scale, zp) = struct.unpack_from(_TENSOR, data, pos)
            pos += _TENSOR_LEN
            if tf & _TF_SCRATCH:
                buf = self._scratch
            elif tf & _TF_INT32:
                buf = zeros("i", cnt)
            else:
                _check(off + cnt <= arena, "model file corrupted: tensor at %d+%d outside the arena", off, cnt)
                buf = amv[off : off + cnt]
            tensors.append((dt, (d0, d1, d2, d3)[:ndim], cnt, scale, zp, buf))
        self._tensors = tensors
        self._inputs = {}
        self._outputs = {}
        self._output_order = []
        pos = io_pos
        for i in range(nin + nout):
            kind, flags, tid, ln = struct.unpack_from("<BBHB", data, pos)
            name = str(bytes(data[pos + 5 : pos + 5 + ln]), "utf-8")
            pos = (pos + 5 + ln + 3) & ~3
            _check(tid < nt, "model file corrupted: io %s names tensor %d of %d", name, tid, nt)
            if kind == 0:
                self._inputs[name] = tid
                self._input = tid
            else:
                t = tensors[tid]
                dst = zeros("b" if t[0] == _DT_INT8 else ("i" if t[0] == _DT_INT32 else "B"), t[2])
                self._outputs[name] = (tid, flags, dst)
                self._output_order.append(name)
        _check(nin == 1, "model has %d inputs; this runtime runs single-input models", nin)
        at = 0
        for i in range(nops):
            code, _f, i0, i1, o, woff, wlen, _poff, _pcnt = ops[i]
            w = src.read(woff, wlen, None if blob is None else blob[at : at + wlen])
            at += wlen
            ops[i] = self._bind(code, i0, i1, o, w, params[i])
        self._ops = tuple(ops)

    def _bind(self, code, i0, i1, o, w, p):
        t = self._tensors
        if code == _OP_CONV:
            return (kernels.conv, t[i0][5], w, t[o][5], (p, self._cols))
        if code == _OP_FC:
            return (kernels.fc, t[i0][5], w, t[o][5], p)
        if code == _OP_REQUANT:
            return (kernels.requant, t[i0][5], t[o][5], p, t[o][2])
        if code == _OP_MAXPOOL:
            return (kernels.maxpool, t[i0][5], t[o][5], p, 0)
        if code == _OP_AVGSUM:
            return (kernels.avgsum, t[i0][5], t[o][5], p, 0)
        if code == _OP_LUT:
            return (kernels.lut, t[i0][5], t[o][5], p, t[o][2])
        if code == _OP_ADD:  # an operand without a tensor is a constant held in the file
            from . import float32

            a = w if i0 == _NONE else t[i0][5]
            b = w if i1 == _NONE else t[i1][5]
            return (float32.addf, a, b, t[o][5], p)
        if code == _OP_AVGPOOL:
            from . import float32

            return (float32.avgpool, t[i0][5], t[o][5], p, 0)
        if code == _OP_FCFIX:
            from . import floatfix

            return (floatfix.floatfix, t[i0][5], t[i1][5], t[o][5], p)
        raise ModelError("model uses opcode %d, unknown to this runtime" % code)

    # --- input ---

    def input_shape(self):
        """Shape of the (single) input tensor, batch dimension included (it is 1)."""
        return self._tensors[self._input][1]

    def input_size(self):
        """Number of input values one run() consumes."""
        return self._tensors[self._input][2]

    def input_qparams(self):
        """(scale, zero_point) of the quantized input."""
        t = self._tensors[self._input]
        return t[3], t[4]

    def quantize_input(self, values):
        """Quantize float values into the input buffer: round half to even, saturate.

        Float arithmetic allocates on MicroPython; feed set_input_q() to avoid it.
        """
        dt, _s, cnt, scale, zp, buf = self._tensors[self._input]
        _check(len(values) == cnt, "input has %d values, the model takes %d", len(values), cnt)
        lo, hi, bias = (-128, 127, 128) if dt == _DT_INT8 else (0, 255, 0)
        for i in range(cnt):
            q = round(values[i] / scale) + zp
            buf[i] = (lo if q < lo else hi if q > hi else q) + bias

    def set_input_q(self, data):
        """Copy already quantized input bytes (int8 two's complement, or uint8) into the input."""
        dt, _s, cnt, _sc, _zp, buf = self._tensors[self._input]
        _check(len(data) == cnt, "input has %d values, the model takes %d", len(data), cnt)
        flip = 0x80 if dt == _DT_INT8 else 0
        for i in range(cnt):
            buf[i] = (data[i] & 0xFF) ^ flip

    # --- run ---

    def run(self):
        """Run the plan once on the current input; refreshes every output array.

        Few locals on purpose: a small bytecode frame lives on the C stack, a large one
        would be a transient heap block on MicroPython.
        """
        for op in self._ops:
            op[0](op[1], op[2], op[3], op[4])
        for name in self._output_order:
            self._publish(self._outputs[name])

    def _publish(self, out):
        t = self._tensors[out[0]]
        if t[0] == _DT_INT32:
            src = t[5]
            dst = out[2]
            for i in range(t[2]):
                dst[i] = src[i]
        else:  # stored bytes to int8 (minus the +128 bias) or uint8 values
            kernels.copy8(t[5], out[2], t[2], 128 if t[0] == _DT_INT8 else 0)

    # --- outputs ---

    def output_names(self):
        return list(self._output_order)

    def _out(self, name):
        try:
            return self._outputs[name]
        except KeyError:
            raise ModelError("model has no output %r (outputs: %s)" % (name, ", ".join(self._output_order)))

    def bind_output(self, name, buf):
        """Make run() write output `name` into the caller's array from now on.

        buf must have the output's typecode ('b' int8, 'B' uint8, 'i' int32) and length;
        output(name) then returns buf.
        """
        tid, flags, dst = self._out(name)
        _check(len(buf) == len(dst), "output %s holds %d values, the buffer %d", name, len(dst), len(buf))
        if hasattr(buf, "typecode"):  # CPython; MicroPython arrays do not expose it
            _check(buf.typecode == dst.typecode, "output %s needs an array('%s')", name, dst.typecode)
        self._outputs[name] = (tid, flags, buf)

    def output(self, name):
        """The int8/uint8/int32 array of output `name` (REUSED: overwritten by the next run())."""
        return self._out(name)[2]

    def output_shape(self, name):
        return self._tensors[self._out(name)[0]][1]

    def output_qparams(self, name):
        """(scale, zero_point) that dequantize output `name`: real = scale * (q - zero_point)."""
        t = self._tensors[self._out(name)[0]]
        return t[3], t[4]

    def has_softmax(self, name):
        """True when the ONNX graph applies Softmax to this output: output() holds its logits."""
        return bool(self._out(name)[1] & _IOF_SOFTMAX)

    def argmax(self, name):
        """Index of the largest value of output `name` (first one on ties); no allocation."""
        a = self._out(name)[2]
        best = 0
        for i in range(1, len(a)):
            if a[i] > a[best]:
                best = i
        return best

    def topk(self, name, k=3):
        """[(class, probability, confidence 0..255)] of the k best classes, best first.

        Probabilities are the Softmax of the dequantized logits when the graph has one,
        else the dequantized values. Allocates (floats, a list): call it once per frame.
        """
        scale, zp = self.output_qparams(name)
        a = self._out(name)[2]
        vals = [scale * (v - zp) for v in a]
        if self.has_softmax(name):
            m = max(vals)
            ex = [_E ** (v - m) for v in vals]
            s = sum(ex)
            vals = [e / s for e in ex]
        order = sorted(range(len(vals)), key=lambda i: (-vals[i], i))[:k]
        out = []
        for i in order:
            p = vals[i]
            c = int(p * 255 + 0.5)
            out.append((i, p, 0 if c < 0 else 255 if c > 255 else c))
        return out


def load(path):
    """Load a .qem file: Model(path)."""
    return Model(path)
