"""`qis board build --board NAME`: a deployable folder for a board, and its size report.

MicroPython boards: edge/ and the board's modules compiled by mpy-cross for the board's
architecture into lib/ (the board's /lib), the scripts the firmware runs (boot.py,
main.py) as source, the model file, the config example, and for freezing: manifest.py
with src/ (the sources and model_qem.py, the model as a bytes constant). CPython boards
(rpi): the same layout with sources. The report: bytes per module, the flash a file
deploy takes, and the heap of the device loop measured on the unix build
(tools/board/heaprun.py: live bytes after setup and the most live at any event), once
with the modules loaded from files and once from romfs.img, lib/ as MicroPython's ROMFS
image (mpremote's writer): imported in place, as from a flash partition, the code's
bytecode and constants stay out of the heap.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ToolError
from ..sim import micropython
from ..sim.emulate import REPLAY, resolve_model
from .targets import TARGETS

# A MicroPython board's main.py is compiled like its other modules (lib/BOARD_main.mpy):
# a script is compiled on the board at every start, which costs heap (the parse tree, and
# holes it leaves) that a .mpy does not. The firmware still runs main.py, which imports it.
MAIN_STUB = """# boards/%s/main.py, compiled (lib/%s.mpy): importing it runs the device.
import %s
"""
HEAP_FRAMES = 20  # frames of the heap run: enough for every path (seal, outbox, ACK) to repeat


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", required=True, choices=sorted(TARGETS), help="board to build")
    parser.add_argument("--out", type=Path, help="build folder (default var/build/BOARD)")
    parser.add_argument("--model", default="cnn", help="model to ship: cnn (default), mlp, dscnn, rule")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def mpy_cross(src: Path, dst: Path, arch: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "mpy-cross"
    proc = subprocess.run([str(exe if exe.exists() else "mpy-cross"), "-march=" + arch, "-o", str(dst), str(src)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise ToolError(f"mpy-cross -march={arch} could not compile {src}: {proc.stderr.strip()}")


def main_module(board: str) -> str:
    return board + "_main"


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def build(board: str, out: Path, model: str = "cnn", heap: bool = True) -> dict:
    """Write the build folder of `board` into `out` (emptied first); return the report
    (with the heap run of the unix build unless heap is False: a deploy needs none)."""
    target = TARGETS[board]
    board_dir = micropython.board_dir(board)
    edge_dir = micropython.lib_dir() / "edge"
    if out.exists():
        shutil.rmtree(out)
    (out / "lib").mkdir(parents=True)
    compiled = target.runtime == "micropython"
    for py in _sources(edge_dir):
        rel = Path("edge") / py.relative_to(edge_dir)
        if compiled:
            mpy_cross(py, out / "lib" / rel.with_suffix(".mpy"), target.arch)
        else:
            (out / "lib" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(py, out / "lib" / rel)
    for f in sorted(board_dir.iterdir()):
        if compiled and f.name == "main.py":  # compiled too; main.py only imports it
            mpy_cross(f, out / "lib" / (main_module(board) + ".mpy"), target.arch)
            (out / "main.py").write_text(MAIN_STUB % (board, main_module(board), main_module(board)))
        elif f.name in target.scripts or f.suffix in (".json", ".service"):
            shutil.copy2(f, out / f.name)
        elif f.suffix == ".py" and f.name != "manifest.py":
            if compiled:
                mpy_cross(f, out / "lib" / f.with_suffix(".mpy").name, target.arch)
            else:
                shutil.copy2(f, out / "lib" / f.name)
    model_file, model_id = resolve_model(model)
    if compiled:
        (out / "romfs.img").write_bytes(romfs_image(out / "lib", None if model_file == "rule" else Path(model_file)))
    if model_file != "rule":
        shutil.copy2(model_file, out / "model.qem")
    if (board_dir / "manifest.py").exists():  # sources to freeze into firmware
        shutil.copy2(board_dir / "manifest.py", out / "manifest.py")
        shutil.copytree(edge_dir, out / "src" / "edge", ignore=shutil.ignore_patterns("__pycache__"))
        for f in board_dir.glob("*.py"):
            if f.name == "main.py":
                shutil.copy2(f, out / "src" / (main_module(board) + ".py"))
            elif f.name not in target.scripts and f.name != "manifest.py":
                shutil.copy2(f, out / "src" / f.name)
        data = None if model_file == "rule" else Path(model_file).read_bytes()
        (out / "src" / "model_qem.py").write_text(
            "# The model as a bytes constant: frozen into firmware it stays in flash.\nDATA = %r\n" % (data,))
    deployed = [p for p in sorted(out.rglob("*")) if p.is_file() and "src" not in p.relative_to(out).parts
                and p.name not in ("manifest.py", "romfs.img")]
    report = {
        "board": board, "arch": target.arch or "python source", "out": str(out),
        "modules": {str(p.relative_to(out)): p.stat().st_size for p in deployed if p.suffix in (".mpy", ".py")},
        "flash": sum(p.stat().st_size for p in deployed),
        "model": model, "model_id": model_id,
        "romfs": (out / "romfs.img").stat().st_size if compiled else None,
    }
    unix_build = out if board == "unix" else None
    report["heap"] = measure_heap(unix_build, model_file, model_id) if heap else None
    report["heap_romfs"] = measure_heap(unix_build, model_file, model_id, romfs=True) if heap else None
    (out / "sizes.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def romfs_image(lib: Path, model: Path | None = None) -> bytes:
    """lib/ (and the model, as model.qem) as a MicroPython ROMFS image: mpremote's writer,
    its listing not printed."""
    from mpremote.romfs import make_romfs

    with tempfile.TemporaryDirectory(prefix="qis-romfs-") as tmp:
        staged = Path(tmp) / "rom"
        shutil.copytree(lib, staged)
        if model is not None:
            shutil.copy2(model, staged / "model.qem")
        with contextlib.redirect_stdout(io.StringIO()):
            return make_romfs(str(staged), mpy_cross=False)


def measure_heap(unix_build: Path | None, model_file: str, model_id: int, romfs: bool = False) -> dict:
    """Run the device loop of the unix build (made in a temporary folder if not given),
    its modules loaded from files, or (romfs) imported in place from the build's image."""
    with tempfile.TemporaryDirectory(prefix="qis-heap-") as tmp:
        if unix_build is None:
            unix_build = Path(tmp) / "unix"
            for py in _sources(micropython.lib_dir() / "edge"):
                rel = py.relative_to(micropython.lib_dir())
                mpy_cross(py, unix_build / "lib" / rel.with_suffix(".mpy"), TARGETS["unix"].arch)
            (unix_build / "romfs.img").write_bytes(romfs_image(unix_build / "lib"))  # the model stays a file
        state = Path(tmp) / "state"
        state.mkdir()
        script = Path(__file__).resolve().parent / "heaprun.py"
        args = [str(script), str(state), model_file, str(model_id), str(HEAP_FRAMES), str(REPLAY)]
        if romfs:
            args.append(str(unix_build / "romfs.img"))
        proc = subprocess.run(micropython.command(args, "4M"), capture_output=True, text=True, timeout=300,
                              env=dict(micropython.env(), MICROPYPATH="" if romfs else str(unix_build / "lib")))
    if proc.returncode:
        raise ToolError(f"the heap run of the unix build failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["acked"] != HEAP_FRAMES:
        raise ToolError(f"the heap run acknowledged {result['acked']} of {HEAP_FRAMES} frames")
    return {"resident": result["resident"], "high": result["high"], "frames": HEAP_FRAMES, "parts": result["parts"]}


def format_report(r: dict) -> str:
    lines = [f"{r['board']} ({r['arch']}) -> {r['out']}", f"{'module':<34} {'bytes':>8}"]
    lines += [f"{name:<34} {size:>8,}" for name, size in sorted(r["modules"].items())]
    lines.append(f"{'flash (every file a deploy copies)':<34} {r['flash']:>8,}")
    for key, where in (("heap", "modules from files"), ("heap_romfs", "modules in place from romfs.img")):
        h = r[key]
        if h is None:
            continue
        lines.append(f"heap of the device loop (unix build, model {r['model']}, {h['frames']} frames, {where}): "
                     f"{h['resident']:,} B live after setup, {h['high']:,} B most live at any event")
        lines += [f"  {name:<72} {size:>8,}" for name, size in h["parts"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = build(args.board, args.out or Path("var/build") / args.board, args.model)
    print(json.dumps(report) if args.json else format_report(report))
    return 0
