"""Static memory plan for a compiled edge model: 8-bit activations share one arena.

Each base tensor lives from the op that writes it (the input: before the first op); a view is a
reshape or slice of its base tensor (element offset `start`) to the
last op that reads it or any of its views (graph inputs and outputs: to the end). Tensors are placed
largest first at the lowest 4-aligned offset that overlaps no placed tensor alive at the
same time (first fit); an op's output never shares bytes with its inputs because their
lifetimes overlap at that op. int32 accumulators go to one shared scratch array (each
is consumed by the very next op); other int32 tensors get arrays of their own.
"""
from __future__ import annotations

from . import format as F


def plan(tensors: list[F.Tensor], alias: list[int], start: list[int], ops: list[F.Op], inputs: list[int],
         outputs: list[int]) -> tuple[int, int]:
    """Assign arena offsets in place; return (arena bytes, scratch int32 words)."""
    end = len(ops)
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def touch(tid: int, at: int, write: bool) -> None:
        b = alias[tid]
        if write:
            first.setdefault(b, at)
        last[b] = max(last.get(b, at), at)

    for tid in inputs:
        touch(tid, -1, True)
    for i, op in enumerate(ops):
        for tid in (op.in0, op.in1):
            if tid != F.NONE:
                touch(tid, i, False)
        touch(op.out, i, True)
    for tid in outputs + inputs:  # the input stays valid after run()
        touch(tid, end, False)
    scratch = 0
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    bases = [b for b in first if not tensors[b].flags & F.TF_INT32]
    for b in sorted(bases, key=lambda t: (-tensors[t].nelem, t)):
        size = (tensors[b].nelem + 3) & ~3
        lo, hi = first[b], last.get(b, first[b])
        clashes = sorted((o, s) for o, s, f, l in placed if f <= hi and lo <= l)
        off = 0
        for o, s in clashes:
            if off + size <= o:
                break
            off = max(off, (o + s + 3) & ~3)
        placed.append((off, size, lo, hi))
        tensors[b].offset = off
    for t in tensors:
        if t.flags & F.TF_SCRATCH:
            scratch = max(scratch, t.nelem)
    for tid, b in enumerate(alias):
        tensors[tid].offset = tensors[b].offset + start[tid]
    arena = max((o + s for o, s, _, _ in placed), default=0)
    return arena, scratch
