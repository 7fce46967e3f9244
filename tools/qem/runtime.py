"""The edge runtime (qis.edge.model) run on many inputs: under this CPython, or under the
MicroPython unix port through the one launcher (qis.tools.sim.micropython)."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ToolError
from ..sim import micropython

_DRIVER = r"""
import sys
from edge.model import Model
m = Model(%(qem)r)
names = m.output_names()
n_in = m.input_size()
buf = bytearray(n_in)
out = sys.stdout
with open(%(inp)r, "rb") as f:
    while f.readinto(buf) == n_in:
        m.set_input_q(buf)
        m.run()
        parts = []
        for name in names:
            parts.append(" ".join(str(v) for v in m.output(name)))
        out.write("|".join(parts))
        out.write("\n")
"""

_MEMORY = r"""
import gc, micropython
from edge.model import Model


def main():
    gc.collect()
    base = gc.mem_alloc()
    m = Model(%(qem)r)
    x = bytearray(m.input_size())
    with open(%(inp)r, "rb") as f:
        f.readinto(x)
    m.set_input_q(x)
    gc.collect()
    loaded = gc.mem_alloc()
    m.run()  # warm-up: the first call after a collection
    gc.collect()
    before = gc.mem_alloc()
    peak = micropython.mem_peak()
    m.run()
    after = gc.mem_alloc()
    peak = micropython.mem_peak() - peak
    print("%%d %%d %%d %%d" %% (loaded - base, after - before, peak, gc.mem_free()))
    for name in m.output_names():
        print(name, " ".join(str(v) for v in m.output(name)))


main()
"""


def run_cpython(qem: bytes, rows: np.ndarray) -> dict[str, np.ndarray]:
    """One run() per row of pre-quantized input, under this CPython: {output: [rows, n]}."""
    from qis.edge.model import Model

    m = Model(qem)
    outs: dict[str, list] = {n: [] for n in m.output_names()}
    for row in rows:
        m.set_input_q(row.reshape(-1).view(np.uint8).tobytes())
        m.run()
        for n in outs:
            outs[n].append(np.array(m.output(n)))
    return {n: np.stack(v) for n, v in outs.items()}


def run_micropython(qem: bytes, rows: np.ndarray, heap: str = "256K", progress: bool = False) -> dict[str, np.ndarray]:
    """The same under the MicroPython unix port: inputs from a file, outputs streamed back."""
    with tempfile.TemporaryDirectory() as tmp:
        qp, ip, dp = Path(tmp, "m.qem"), Path(tmp, "x.bin"), Path(tmp, "driver.py")
        qp.write_bytes(qem)
        ip.write_bytes(np.ascontiguousarray(rows).view(np.uint8).tobytes())
        dp.write_text(_DRIVER % {"qem": str(qp), "inp": str(ip)})
        proc = micropython.popen([str(dp)], heap=heap, stdout=-1, stderr=-1, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if progress and len(lines) % 500 == 0:
                print("micropython: %d/%d" % (len(lines), len(rows)), file=sys.stderr, flush=True)
        err = proc.stderr.read()
        if proc.wait() != 0 or len(lines) != len(rows):
            raise ToolError("the edge runtime under MicroPython stopped after %d of %d inputs: %s"
                            % (len(lines), len(rows), err.strip() or "no message"))
    from qis.edge.model import Model

    names = Model(qem).output_names()
    outs: dict[str, list] = {n: [] for n in names}
    for line in lines:
        for n, part in zip(names, line.rstrip("\n").split("|")):
            outs[n].append(np.array([int(v) for v in part.split()], np.int64))
    return {n: np.stack(v) for n, v in outs.items()}


def micropython_memory(qem: bytes, row: np.ndarray, heap: str = "64K", lib: Path | None = None) -> dict:
    """One inference under `micropython -X heapsize=HEAP`: model bytes after load, heap growth
    and micropython.mem_peak() delta of one run(), free heap, and the outputs. lib: a
    folder whose edge/ package replaces the source one (precompiled .mpy, as on a board)."""
    with tempfile.TemporaryDirectory() as tmp:
        qp, ip, dp = Path(tmp, "m.qem"), Path(tmp, "x.bin"), Path(tmp, "mem.py")
        qp.write_bytes(qem)
        ip.write_bytes(np.ascontiguousarray(row).view(np.uint8).tobytes())
        dp.write_text(_MEMORY % {"qem": str(qp), "inp": str(ip)})
        env = micropython.env() if lib is None else dict(micropython.env(), MICROPYPATH=str(lib))
        proc = subprocess.run(micropython.command([str(dp)], heap), capture_output=True, env=env, cwd=tmp)
    out = proc.stdout.decode()
    if proc.returncode != 0:
        raise ToolError("the edge runtime under MicroPython (heap %s) failed: %s%s" % (heap, out, proc.stderr.decode()))
    lines = out.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if len(line.split()) == 4 and line.split()[0].isdigit())
    loaded, grew, peak, free = (int(v) for v in lines[start].split())
    outputs = {line.split()[0]: np.array([[int(v) for v in line.split()[1:]]]) for line in lines[start + 1:]}
    return {"heap": heap, "model_bytes_after_load": loaded, "run_heap_growth": grew,
            "run_mem_peak_delta": peak, "free_after_run": free, "outputs": outputs}
