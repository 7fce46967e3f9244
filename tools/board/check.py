"""`qis board check`: type-check edge/ and each board's code against its port's stubs.

mypy runs with a typeshed made from the pinned MicroPython stub wheels of the port
(micropython-stdlib-stubs plus micropython-<port>-stubs, fetched once with pip and checked
by sha256, like the data sets): a module, function or attribute the port lacks is an
error before anything is flashed. edge/ is checked against every port a board runs on
(esp32, rp2, unix) with compat's MicroPython branch taken; each MicroPython board's code
against its own port; the Raspberry Pi board against CPython. What mypy cannot judge is
switched off by name, where it occurs: viper's pointer annotations and indexing
(valid-type, index) in the modules with viper kernels.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

from ..datasets.pinned import PinnedWheel, default_cache, ensure_wheel
from ..errors import ToolError
from ..sim import micropython
from .targets import EDGE_PORTS, TARGETS

STDLIB = PinnedWheel("micropython-stdlib-stubs==1.29.0.post2", "micropython_stdlib_stubs-1.29.0.post2-py3-none-any.whl",
                     "bdcd54d9896d8e1d455b3a99995d82a8399e1e2c9cb94eacabe278e5c2397783")
PORTS = {
    "esp32": PinnedWheel("micropython-esp32-stubs==1.29.0.post1",
                         "micropython_esp32_stubs-1.29.0.post1-py2.py3-none-any.whl",
                         "c0a72410b9924f51b520534de0dc7f1839ff8f108689aa1e935a0c2b9fcbd96b"),
    "rp2": PinnedWheel("micropython-rp2-stubs==1.29.0.post1", "micropython_rp2_stubs-1.29.0.post1-py2.py3-none-any.whl",
                       "a26183e4ef7557469fd3387677a8e08cf1bc856a6cbe13acc773e57e94f0625c"),
    "unix": PinnedWheel("micropython-unix-stubs==1.29.0.post1", "micropython_unix_stubs-1.29.0.post1-py2.py3-none-any.whl",
                        "77a5d926f2114c55cda7dcd1518019612f29989bf36aabd771f1f1a3d16310ab"),
}
VIPER_MODULES = ("edge.kernels", "edge.float32", "edge.floatfix", "edge.ccm", "edge.cbor", "edge.stream")
MYPY_CONFIG = """[mypy]
python_version = 3.11
check_untyped_defs = True
%s = IS_MICROPYTHON
disable_error_code = var-annotated
incremental = False

[mypy-%s]
disable_error_code = valid-type, index, var-annotated, assignment
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", choices=sorted(TARGETS), help="check one board (and edge/ for its port) only")


def typeshed(port: str, cache: Path | None = None) -> Path:
    """A typeshed folder for `port`: the stdlib stubs with the port's modules added."""
    cache = default_cache() if cache is None else cache
    root = cache / "stubs" / PORTS[port].name.replace(".whl", "") / "typeshed"
    if (root / "stdlib" / "VERSIONS").is_file():
        return root
    stdlib, port_wheel = ensure_wheel(STDLIB, cache), ensure_wheel(PORTS[port], cache)
    tmp = root.with_name("typeshed.tmp")
    with zipfile.ZipFile(stdlib) as z:
        z.extractall(tmp)
    with zipfile.ZipFile(port_wheel) as z:
        names = [n for n in z.namelist() if n.endswith(".pyi")]
        z.extractall(tmp / "stdlib", names)
    (tmp / "_mpy_shed").rename(tmp / "stdlib" / "_mpy_shed")
    versions = tmp / "stdlib" / "VERSIONS"
    known = {line.split(":")[0] for line in versions.read_text().splitlines() if ":" in line}
    added = sorted({n.split("/")[0].removesuffix(".pyi") for n in names} | {"_mpy_shed"} - known)
    with open(versions, "a") as f:
        f.writelines(f"{m}: 3.0-\n" for m in added)
    tmp.rename(root)
    return root


def mypy(args: list[str], workdir: Path, port: str | None, path: list[Path]) -> str:
    """Run mypy; '' when it passes, else its report."""
    config = workdir / "mypy.ini"
    branch = "always_true" if port else "always_false"  # compat's MicroPython branch, or CPython's
    config.write_text(MYPY_CONFIG % (branch, ",".join(VIPER_MODULES)))
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(workdir / "cache")]
    if port:
        cmd += ["--custom-typeshed-dir", str(typeshed(port))]
    env = {"MYPYPATH": ":".join(str(p) for p in path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(cmd + args, capture_output=True, text=True, cwd=workdir, env=env, timeout=300)
    return "" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip()


def check(boards: list[str], workdir: Path) -> list[str]:
    """Lines naming what failed (empty: all passed)."""
    lib = micropython.lib_dir()
    failures = []
    ports = EDGE_PORTS if len(boards) > 1 else tuple(TARGETS[b].port for b in boards if TARGETS[b].port)
    for port in ports:
        out = mypy(["-p", "edge"], workdir, port, [lib])
        if out:
            failures.append(f"edge/ against the {port} stubs:\n{out}")
    for board in boards:
        target = TARGETS[board]
        folder = micropython.board_dir(board)
        modules = [a for p in sorted(folder.glob("*.py")) if p.name != "manifest.py" for a in ("-m", p.stem)]
        extra = [] if target.port else ["--ignore-missing-imports"]  # CPython: pyserial ships no types
        out = mypy([*extra, *modules], workdir, target.port or None, [lib, folder])
        if out:
            failures.append(f"boards/{board} against the {target.port or 'CPython'} stubs:\n{out}")
    return failures


def run(args: argparse.Namespace) -> int:
    import tempfile

    boards = [args.board] if args.board else sorted(TARGETS)
    with tempfile.TemporaryDirectory(prefix="qis-check-") as tmp:
        failures = check(boards, Path(tmp))
    if failures:
        raise ToolError("type check failed:\n" + "\n\n".join(failures))
    print("checked edge/ and boards %s against their ports' stubs: no errors" % ", ".join(boards))
    return 0
