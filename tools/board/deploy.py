"""`qis board deploy --board NAME --port PORT`: put a build on a board.

MicroPython boards: the build's files copied with mpremote (lib/, the scripts, the model),
the config written with the device's key (a 0600 temporary file, copied, deleted; the key
is never printed), then the board is reset. Without a board at PORT it says so and stops.
rpi: installs on the host it runs on (or under --root, an image being prepared): the
wheel into /opt/qis-edge/venv, the build into /opt/qis-edge, the config into
/etc/qis-edge/device.json (0600), the systemd units; as root on the live system it also
creates the service user and enables the units.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from qis.gateway.keys import key_path, read_key_file

from ..errors import ToolError, UsageError
from .build import build
from .targets import TARGETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", required=True, choices=sorted(TARGETS), help="board to deploy to")
    parser.add_argument("--port", help="the board's serial port (MicroPython boards), e.g. /dev/ttyUSB0")
    parser.add_argument("--config", type=Path, help="the board's config (see boards/BOARD/config.example.json)")
    parser.add_argument("--keys", type=Path, help="key directory (`qis device provision`)")
    parser.add_argument("--id", help="device id (its key is KEYS/ID.key)")
    parser.add_argument("--model", default="cnn", help="model to ship (cnn, mlp, dscnn, rule)")
    parser.add_argument("--root", type=Path, default=Path("/"), help="rpi: install under this root (default /)")
    parser.add_argument("--wheel", type=Path, help="rpi: the qis-edge wheel to install into /opt/qis-edge/venv")
    parser.add_argument("--gateway", action="store_true", help="rpi: also install the gateway unit")


def device_config(config: Path, keys: Path, device: str) -> dict:
    """The config with the device's current key merged in."""
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ToolError(f"cannot read the config {config}: {exc}") from None
    current, _ = read_key_file(key_path(keys, device))
    cfg.update(device=current.device, kid=current.kid.hex(), key=current.key.hex())
    cfg.setdefault("retired", [])
    return cfg


def write_private(path: Path, cfg: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)


def mpremote(port: str, *args: str) -> None:
    exe = Path(sys.executable).parent / "mpremote"
    if not exe.exists() and not shutil.which("mpremote"):
        raise ToolError("mpremote not found: pip install 'qis-edge[boards]' (or pip install mpremote)")
    proc = subprocess.run([str(exe if exe.exists() else "mpremote"), "connect", port, *args],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise ToolError(f"mpremote {args[0]} on {port} failed: {proc.stderr.strip()[-1000:]}")


def deploy_micropython(args: argparse.Namespace, cfg: dict) -> None:
    if not args.port:
        raise UsageError("name the board's serial port with --port (e.g. /dev/ttyUSB0)")
    if not Path(args.port).exists():
        raise ToolError(f"no board at {args.port}: looked for the serial port {args.port} and found nothing; "
                        "plug the board in (or name its port with --port) and run this again")
    with tempfile.TemporaryDirectory(prefix="qis-deploy-") as tmp:
        out = Path(tmp) / "build"
        build(args.board, out, args.model, heap=False)
        if (out / "model.qem").exists():
            cfg["model"] = "/model.qem"
        write_private(out / "config.json", cfg)
        files = [p for p in sorted(out.iterdir()) if p.name not in ("src", "manifest.py", "sizes.json")
                 and not p.name.endswith(".example.json")]
        for f in files:
            mpremote(args.port, "fs", "cp", *(["-r"] if f.is_dir() else []), str(f), ":" + ("" if f.is_dir() else f.name))
    mpremote(args.port, "reset")
    print(f"deployed {args.board} to {args.port} and reset it ({len(files)} entries; config with the key of {cfg['device']})")


def deploy_rpi(args: argparse.Namespace, cfg: dict) -> None:
    root = args.root
    live = root.resolve() == Path("/")
    opt, etc = root / "opt" / "qis-edge", root / "etc"
    build("rpi", opt / "build", args.model, heap=False)
    for item in ("lib", "main.py"):  # /opt/qis-edge/lib (the edge package) and main.py
        dst = opt / item
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(opt / "build" / item, dst)
    if (opt / "build" / "model.qem").exists():
        os.replace(opt / "build" / "model.qem", opt / "model.qem")
        cfg["model"] = "/opt/qis-edge/model.qem"
    units = ["qis-edge-device.service"] + (["qis-edge-gateway.service"] if args.gateway else [])
    (etc / "systemd" / "system").mkdir(parents=True, exist_ok=True)
    for unit in units:
        shutil.copy2(opt / "build" / unit, etc / "systemd" / "system" / unit)
    shutil.rmtree(opt / "build")
    write_private(etc / "qis-edge" / "device.json", cfg)
    if args.gateway and not (etc / "qis-edge" / "gateway.env").exists():
        (etc / "qis-edge" / "gateway.env").write_text('QIS_SERIAL="--serial /dev/ttyUSB0"\n')
    if args.wheel:
        subprocess.run([sys.executable, "-m", "venv", str(opt / "venv")], check=True)
        subprocess.run([str(opt / "venv" / "bin" / "pip"), "install", "-q", str(args.wheel)], check=True)
    else:
        print(f"no --wheel given: {opt / 'venv'} is left as it is", file=sys.stderr)
    if live:
        for user in ["qis-edge"] + (["qis-gateway"] if args.gateway else []):
            if subprocess.run(["id", user], capture_output=True).returncode:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                               check=True)
        shutil.chown(etc / "qis-edge" / "device.json", "qis-edge", "qis-edge")
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "enable", "--now", *units], check=True)
    print(f"installed {', '.join(units)} under {root} (config {etc / 'qis-edge' / 'device.json'}, mode 0600)")


def run(args: argparse.Namespace) -> int:
    if not (args.config and args.keys and args.id):
        raise UsageError("give --config FILE, --keys DIR and --id ID: the config is deployed with the device's key")
    cfg = device_config(args.config, args.keys, args.id)
    if TARGETS[args.board].runtime == "micropython":
        deploy_micropython(args, cfg)
    else:
        deploy_rpi(args, cfg)
    return 0
