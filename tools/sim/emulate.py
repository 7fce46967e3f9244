"""`qis device emulate`: run the real edge code under the MicroPython unix port on a serial port.

The host opens the serial path (a pty end, or a USB-serial adapter), puts it in raw mode
and hands it to a ``micropython boards/unix/main.py`` process as stdin/stdout: to the edge
code it is the UART. The device reports events as JSON lines on stderr; this command
relays progress, appends every acknowledged counter to ``STATE/acked.log`` (the host's
record of what the device saw acknowledged), and exits with the device's status: 0 once
all N frames are acknowledged.

The device's flash is the state directory: its key (0600), counter slots and outbox.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import termios
import tty
from pathlib import Path

from qis.edge.ecg.registry import MODELS
from qis.gateway.keys import key_path, read_key_file

from ..errors import ToolError
from . import micropython

REPLAY = Path(__file__).resolve().parent.parent / "data" / "mitbih208.i16"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serial", required=True, help="serial port the device talks on (e.g. a pty path)")
    parser.add_argument("--id", required=True, help="device id (its key is KEYS/ID.key)")
    parser.add_argument("--keys", required=True, type=Path, help="key directory")
    parser.add_argument("--frames", required=True, type=int, help="outcomes to conclude in this run")
    parser.add_argument("--profile", default="full", choices=["compact", "full"], help="frame profile")
    parser.add_argument("--state", type=Path, help="the device's flash (default var/devices/ID)")
    parser.add_argument("--model", default="cnn", help="cnn (default), mlp, rule (RR-interval rule), or a .qem file")
    parser.add_argument("--model-id", type=int, help="the frame's model id for a .qem file given by path")
    parser.add_argument("--offset", type=int, default=0, help="first replay sample (spreads devices over the record)")
    parser.add_argument("--heap", default="512K", help="MicroPython heap size (a board's RAM)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def resolve_model(name: str, model_id: int | None = None) -> tuple[str, int]:
    """(file the device loads, or "rule"; model id in its frames) for a model name or a .qem path."""
    if name in MODELS:
        mid, path, _ = MODELS[name]
        return ("rule" if path is None else str(micropython.models_dir() / path)), mid
    if not Path(name).is_file():
        raise ToolError(f"model {name!r} is neither one of {', '.join(MODELS)} nor a .qem file")
    if model_id is None:
        raise ToolError("a model given by path needs --model-id (the id its frames carry)")
    return str(Path(name).resolve()), model_id


def prepare_state(state: Path, key_file: Path, profile: str, model: str, model_id: int | None = None) -> None:
    """Create the device's flash directory and its config (key inside: mode 0600)."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    entry = read_key_file(key_file)
    model_file, model_id = resolve_model(model, model_id)
    # The key goes into a new file created 0600 and then renamed over the old config, so it
    # is never written into a file that others can read (an old config may be 0644).
    config, tmp = state / "config.json", state / "config.json.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"device": entry.device, "kid": entry.kid.hex(), "key": entry.key.hex(),
                   "profile": profile, "model": model_file, "model_id": model_id}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, config)


def open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    if os.isatty(fd):
        tty.setraw(fd, termios.TCSANOW)
    return fd


def device_command(state: Path, frames: int, offset: int, heap: str) -> list[str]:
    main = micropython.board_dir("unix") / "main.py"
    return micropython.command([str(main), str(state), str(frames), str(REPLAY), str(offset)], heap)


def run(args: argparse.Namespace) -> int:
    state = args.state or Path("var/devices") / args.id
    prepare_state(state, key_path(args.keys, args.id), args.profile, args.model, args.model_id)
    fd = open_raw(args.serial)
    proc = subprocess.Popen(device_command(state, args.frames, args.offset, args.heap), stdin=fd, stdout=fd,
                            stderr=subprocess.PIPE, env=micropython.env())
    os.close(fd)
    summary: dict = {}
    with open(state / "acked.log", "a") as acked:
        for raw in proc.stderr:
            line = raw.decode(errors="replace").strip()
            try:
                event = json.loads(line)
            except ValueError:
                print(f"[{args.id}] {line}", file=sys.stderr)  # a traceback or a board message
                continue
            if event.get("ev") == "acked":
                acked.write(f"{event['counter']}\n")
                acked.flush()
            elif event.get("ev") == "done":
                summary = event
            if not args.quiet and event.get("ev") in ("progress", "done", "boot"):
                print(f"[{args.id}] {json.dumps(event)}", file=sys.stderr)
    code = proc.wait()
    if summary:
        print(json.dumps({"device": args.id, **summary}))
    return code
