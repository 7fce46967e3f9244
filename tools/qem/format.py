"""The .qem edge model file: layout constants and the writer (the reader is qis.edge.model).

Layout, all little-endian, every section 4-byte aligned::

    header   32 bytes  "<4sHHIIHHHHII": magic b"QEMF", format version (4), flags (0),
                       file size, arena bytes, n_tensors, n_ops, n_inputs, n_outputs,
                       scratch int32 words, MACs per inference
    tensors  28 bytes each "<BBBBIIHHHHfi": dtype (0 int8, 1 uint8, 2 int32), ndim,
                       flags (1: int32 storage, 2: the shared int32 scratch), 0,
                       arena byte offset, element count, 4 dims (u16), scale, zero point
    io       per entry "<BBHB" + name + padding to 4: kind (0 input, 1 output),
                       flags (1: a Softmax follows this output; it holds the logits),
                       tensor index, name length
    ops      24 bytes each "<BBHHHIIII": opcode, 0, in0, in1, out (0xFFFF: none),
                       weights offset, weights length, params offset, params count
    blob     weights (bytes in stored form, see below) and int32 parameter blocks
    crc      CRC32 (zlib/binascii) of every byte before it

8-bit values are kept in a "stored" form: uint8 as is, int8 biased by +128 (q ^ 0x80), so
one unsigned byte load serves both; zero points in parameter blocks use the same form.
The parameter block of each opcode is documented on its kernel in qis.edge.kernels or
qis.edge.float32 (OP_NAMES gives the kernel of each opcode).
"""
from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field

MAGIC = b"QEMF"
VERSION = 4  # 2: addf, global avgsum, lut, avgpool; 3: conv folded; 4: requant tie marks, floatfix
HEADER = struct.Struct("<4sHHIIHHHHII")
TENSOR = struct.Struct("<BBBBIIHHHHfi")
IO = struct.Struct("<BBHB")
OP = struct.Struct("<BBHHHIIII")

DT_INT8, DT_UINT8, DT_INT32 = 0, 1, 2
TF_INT32, TF_SCRATCH = 1, 2
IO_INPUT, IO_OUTPUT = 0, 1
IOF_SOFTMAX = 1
NONE = 0xFFFF

OP_CONV, OP_FC, OP_REQUANT, OP_MAXPOOL, OP_AVGSUM, OP_ADD, OP_LUT, OP_AVGPOOL, OP_FCFIX = 1, 2, 3, 4, 5, 6, 7, 8, 9
OP_NAMES = {OP_CONV: "conv", OP_FC: "fc", OP_REQUANT: "requant", OP_MAXPOOL: "maxpool",
            OP_AVGSUM: "avgsum", OP_ADD: "addf", OP_LUT: "lut", OP_AVGPOOL: "avgpool", OP_FCFIX: "floatfix"}


@dataclass
class Tensor:
    """A planned tensor: its dtype, shape, quantization and storage."""

    dtype: int
    shape: tuple[int, ...]
    scale: float = 1.0
    zero_point: int = 0
    flags: int = 0
    offset: int = 0

    @property
    def nelem(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Op:
    """One kernel call: opcode, tensor indices, stored-form weights and int32 params."""

    opcode: int
    in0: int
    in1: int = NONE
    out: int = NONE
    weights: bytes = b""
    params: list[int] = field(default_factory=list)


@dataclass
class QemModel:
    """Everything written to a .qem file."""

    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[tuple[str, int]]
    outputs: list[tuple[str, int, int]]  # name, tensor, flags
    arena_bytes: int
    scratch_words: int
    macs: int


def _pad4(b: bytearray) -> None:
    while len(b) % 4:
        b.append(0)


def write(model: QemModel) -> bytes:
    """Serialize a planned model to .qem bytes (CRC32 appended)."""
    out = bytearray(HEADER.size)
    for t in model.tensors:
        if len(t.shape) > 4 or any(d > 0xFFFF for d in t.shape):
            raise ValueError("tensor shape %r does not fit the format (4 dims of u16)" % (t.shape,))
        dims = list(t.shape) + [1] * (4 - len(t.shape))
        out += TENSOR.pack(t.dtype, len(t.shape), t.flags, 0, t.offset, t.nelem, *dims,
                           t.scale, t.zero_point)
    for kind, entries in ((IO_INPUT, [(n, i, 0) for n, i in model.inputs]), (IO_OUTPUT, model.outputs)):
        for name, tid, flags in entries:
            raw = name.encode()
            if len(raw) > 255:
                raise ValueError("io name too long: %r" % name)
            out += IO.pack(kind, flags, tid, len(raw)) + raw
            _pad4(out)
    op_at = len(out)
    out += bytes(OP.size * len(model.ops))
    records = []
    for op in model.ops:
        _pad4(out)
        w_off = len(out)
        out += op.weights
        _pad4(out)
        p_off = len(out)
        out += struct.pack("<%di" % len(op.params), *op.params)
        records.append(OP.pack(op.opcode, 0, op.in0, op.in1, op.out, w_off, len(op.weights),
                               p_off, len(op.params)))
    out[op_at:op_at + OP.size * len(records)] = b"".join(records)
    size = len(out) + 4
    HEADER.pack_into(out, 0, MAGIC, VERSION, 0, size, model.arena_bytes, len(model.tensors),
                     len(model.ops), len(model.inputs), len(model.outputs), model.scratch_words,
                     model.macs)
    out += struct.pack("<I", binascii.crc32(out) & 0xFFFFFFFF)
    return bytes(out)
