"""`qis device emulate`: run the real edge code under the MicroPython unix port on one link.

  --serial PATH   the host opens the serial path (a pty end, or a USB-serial adapter), puts
                  it in raw mode and hands it to the ``micropython boards/unix/main.py``
                  process as stdin/stdout: to the edge code it is the UART.
  --mqtt URL      the device connects to the clinic broker itself (mqtts://: TLS with the
                  CA given by --mqtt-ca, copied to its flash as DER), user name = its id.
  --lora SOCKET   the device's radio is on the emulated medium at SOCKET (`qis lora
                  medium`): an emulated SX127x (--radio sx127x, the default) or a
                  RYLR998-class AT module emulated here on a pty (--radio at).

The device reports events as JSON lines on stderr; this command
relays progress, appends every acknowledged counter to ``STATE/acked.log`` (the host's
record of what the device saw acknowledged), and exits with the device's status: 0 once
all N frames are acknowledged.

The device's flash is the state directory: its key (0600), counter slots and outbox.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from qis.edge.ecg.registry import MODELS
from qis.gateway.keys import key_path, read_key_file

from ..errors import ToolError, UsageError
from . import micropython
from .lora_at import AtModem

REPLAY = Path(__file__).resolve().parent.parent / "data" / "mitbih208.i16"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serial", help="serial port the device talks on (e.g. a pty path)")
    parser.add_argument("--mqtt", metavar="URL", help="clinic broker, mqtt://HOST:PORT or mqtts://HOST:PORT")
    parser.add_argument("--mqtt-password-file", type=Path, metavar="FILE", help="the device's MQTT password (0600)")
    parser.add_argument("--mqtt-ca", type=Path, metavar="FILE", help="clinic CA certificate (PEM), for mqtts://")
    parser.add_argument("--lora", metavar="SOCKET", help="the emulated LoRa medium's socket (qis lora medium)")
    parser.add_argument("--radio", default="sx127x", choices=["sx127x", "at"],
                        help="LoRa radio: SX127x modem API (default) or an AT-command module")
    parser.add_argument("--lora-sf", type=int, default=7, help="LoRa spreading factor (default 7)")
    parser.add_argument("--lora-address", type=int, default=1, help="the radio's address, 1..65535 (default 1)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="the medium's speed-up (emulation only; the device's duty cycle follows it)")
    parser.add_argument("--id", required=True, help="device id (its key is KEYS/ID.key)")
    parser.add_argument("--keys", required=True, type=Path, help="key directory")
    parser.add_argument("--frames", required=True, type=int, help="outcomes to conclude in this run")
    parser.add_argument("--profile", choices=["compact", "full"],
                        help="frame profile (default: compact on LoRa, full elsewhere)")
    parser.add_argument("--state", type=Path, help="the device's flash (default var/devices/ID)")
    parser.add_argument("--model", default="cnn", help="cnn (default), mlp, rule (RR-interval rule), or a .qem file")
    parser.add_argument("--model-id", type=int, help="the frame's model id for a .qem file given by path")
    parser.add_argument("--offset", type=int, default=0, help="first replay sample (spreads devices over the record)")
    parser.add_argument("--heap", default="512K", help="MicroPython heap size (a board's RAM)")
    parser.add_argument("--rekey", action="store_true",
                        help="the flash holds an older key: switch to the key in --keys (see docs/PROTOCOL.md)")
    parser.add_argument("--drop-outbox", action="store_true",
                        help="with --rekey: count the frames waiting under the old key as lost (STATE/lost.log)")
    parser.add_argument("--ask-every", type=int, default=0, metavar="N",
                        help="after every N-th conclusion, ask what similar cases concluded (0: never)")
    parser.add_argument("--build", type=Path,
                        help="run the device from a `qis board build --board unix` folder (.mpy files), not the sources")
    parser.add_argument("--romfs", action="store_true",
                        help="with --build: import the modules in place from the build's romfs.img, as a board with "
                             "its code in flash does; --heap then counts only the heap besides the image")
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


def link_config(args: argparse.Namespace) -> dict:
    """The device's link, from exactly one of --serial, --mqtt, --lora (UsageError otherwise)."""
    given = [name for name in ("serial", "mqtt", "lora") if getattr(args, name)]
    if len(given) != 1:
        raise UsageError("give exactly one link: --serial PATH, --mqtt URL or --lora SOCKET")
    if args.serial:
        return {"kind": "uart"}
    if args.mqtt:
        parts = urlsplit(args.mqtt)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.password:
            raise UsageError(f"--mqtt wants mqtt://HOST:PORT or mqtts://HOST:PORT (password in a file), not {args.mqtt!r}")
        if parts.scheme == "mqtts" and args.mqtt_ca is None:
            raise UsageError("mqtts:// needs the clinic CA certificate: --mqtt-ca FILE")
        password = None
        if args.mqtt_password_file is not None:
            mode = args.mqtt_password_file.stat().st_mode & 0o777
            if mode & 0o077:
                raise UsageError(f"{args.mqtt_password_file} is readable by others (mode {mode:o}); chmod 600 it")
            password = args.mqtt_password_file.read_text().strip()
        return {"kind": "mqtt", "host": parts.hostname, "port": parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                "tls": parts.scheme == "mqtts", "device": args.id, "password": password}
    if not 1 <= args.lora_address <= 65535:
        raise UsageError("--lora-address must be 1..65535 (0 is the broadcast address)")
    return {"kind": "lora", "radio": args.radio, "medium": str(Path(args.lora).resolve()), "sf": args.lora_sf,
            "address": args.lora_address, "name": args.id, "time_scale": args.time_scale}


def prepare_state(state: Path, key_file: Path, profile: str, model: str, model_id: int | None = None,
                  rekey: bool = False, drop_outbox: bool = False, ask_every: int = 0, link: dict | None = None,
                  ca: Path | None = None, device_model: str | None = None) -> list[int]:
    """Create or update the device's flash directory and its config (key inside: 0600).

    If the flash already holds another key than key_file's current one, refuse unless
    rekey: then the counter and outbox stay, new frames are sealed under the new key, and
    the frames waiting under the old key keep it (their ACKs verify under it) until they
    are delivered, or, with drop_outbox, are moved to STATE/lost and returned as lost.
    Returns the counters counted as lost (usually none). No key is ever printed. For TLS,
    the clinic CA goes to the flash as DER (what MicroPython's ssl loads). device_model:
    where the device finds the model, if not at the host's path (a ROMFS image's /rom/...).
    """
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    current, _ = read_key_file(key_file)
    model_file, model_id = resolve_model(model, model_id)
    model_file = device_model or model_file
    old = _read_config(state)
    retired = old.get("retired", []) if old else []
    lost: list[int] = []
    if old and old["device"] != current.device:
        raise ToolError(f"the flash in {state} belongs to device {old['device']}, not {current.device}; "
                        f"give this device its own --state folder")
    if old and old["kid"] != current.kid.hex():
        waiting = _outbox_by_kid(state).get(old["kid"], [])
        if not rekey:
            raise ToolError(
                f"the device's flash in {state} holds key id {old['kid']}, but {key_file} gives key id "
                f"{current.kid.hex()}; {len(waiting)} frames wait in its outbox under the old key. Either start from "
                f"fresh flash (--state NEW_FOLDER; the old outbox stays undelivered in {state}), or re-key this "
                f"flash (--rekey: the counter carries on, the waiting frames keep their old key and are delivered "
                f"while the gateway accepts key id {old['kid']}; add --drop-outbox to count them as lost instead)")
        if drop_outbox:
            lost = _move_to_lost(state, waiting)
        else:
            retired = [{"kid": old["kid"], "key": old["key"]}, *retired]
    # A retired key stays on the flash only while frames sealed under it wait for their ACK.
    waiting_kids = set(_outbox_by_kid(state))
    retired = [r for r in retired if r["kid"] in waiting_kids and r["kid"] != current.kid.hex()]
    # The key goes into a new file created 0600 and then renamed over the old config, so it
    # is never written into a file that others can read (an old config may be 0644).
    config, tmp = state / "config.json", state / "config.json.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"device": current.device, "kid": current.kid.hex(), "key": current.key.hex(),
                   "retired": retired, "profile": profile, "model": model_file, "model_id": model_id,
                   "ask_every": ask_every, "link": link or {"kind": "uart"}}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, config)
    if ca is not None:
        cert = x509.load_pem_x509_certificate(ca.read_bytes())
        (state / "ca.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return lost


def _read_config(state: Path) -> dict | None:
    try:
        return json.loads((state / "config.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ToolError(f"the device's config {state / 'config.json'} cannot be read ({type(exc).__name__}); "
                        "use a fresh --state folder") from None


def _outbox_by_kid(state: Path) -> dict[str, list[Path]]:
    """The outbox's frames by the key id that sealed them (bytes 8..11 of the fixed layout)."""
    found: dict[str, list[Path]] = {}
    for path in sorted((state / "outbox").glob("*.f")):
        found.setdefault(path.read_bytes()[8:12].hex(), []).append(path)
    return found


def _move_to_lost(state: Path, frames: list[Path]) -> list[int]:
    """Move frames out of the outbox into STATE/lost/ and log their counters in lost.log."""
    lost_dir = state / "lost"
    lost_dir.mkdir(mode=0o700, exist_ok=True)
    counters = []
    with open(state / "lost.log", "a") as log:
        for path in frames:
            os.replace(path, lost_dir / path.name)
            counters.append(int(path.stem, 16))
            log.write(f"{counters[-1]}\n")
    return counters


def open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    if os.isatty(fd):
        tty.setraw(fd, termios.TCSANOW)
    return fd


def timeline(stderr) -> tuple[float | None, list[float], dict]:
    """Read a device process's JSON events to the end, timed on the host (time.monotonic):
    (when the first conclusion was reported, when each ACK was, the "done" event)."""
    first, acked, done = None, [], {}
    for raw in stderr:
        if not raw.startswith(b"{"):
            continue
        event, at = json.loads(raw), time.monotonic()
        if event.get("ev") == "concluded" and first is None:
            first = at
        elif event.get("ev") == "acked":
            acked.append(at)
        elif event.get("ev") == "done":
            done = event
    return first, acked, done


def device_env(build: Path | None = None, romfs: bool = False) -> dict[str, str]:
    """The device process's environment: edge, and the unix board's own modules (its
    radio); or, from a build (`qis board build --board unix`), its compiled lib folder, or
    (romfs) no folder at all: romboot.py imports everything from the image."""
    if build is not None:
        return dict(micropython.env(), MICROPYPATH=".frozen" if romfs else str(build / "lib"))
    return micropython.env(micropython.board_dir("unix"))


def device_command(state: Path, frames: int, offset: int, heap: str, build: Path | None = None,
                   romfs: bool = False) -> list[str]:
    args = [str(state), str(frames), str(REPLAY), str(offset)]
    if build is not None and romfs:
        image = build / "romfs.img"
        if not image.exists():
            raise ToolError(f"{build} has no romfs.img: build it again with `qis board build --board unix`")
        # The image stands in for flash: the heap asked for is the device's, plus the image.
        heap = str(heap_bytes(heap) + image.stat().st_size)
        return micropython.command([str(build / "romboot.py"), str(image), *args], heap)
    main = (build if build else micropython.board_dir("unix")) / "main.py"
    return micropython.command([str(main), *args], heap)


def _rom_model(args: argparse.Namespace) -> str | None:
    """With --romfs, the model inside the build's image when it is the one asked for."""
    if not (args.romfs and args.build is not None):
        return None
    try:
        built = json.loads((args.build / "sizes.json").read_text())
    except (OSError, ValueError):
        raise ToolError(f"{args.build} has no readable sizes.json: build it with `qis board build`") from None
    return "/rom/model.qem" if built.get("model") == args.model and args.model != "rule" else None


def heap_bytes(heap: str) -> int:
    """MicroPython's -X heapsize value (a number of bytes, K or M) in bytes."""
    scale = {"K": 1 << 10, "M": 1 << 20}.get(heap[-1:].upper(), 1)
    digits = heap[:-1] if scale > 1 else heap
    if not digits.isdigit():
        raise UsageError(f"--heap wants a size like 96K or 4M, not {heap!r}")
    return int(digits) * scale


@contextlib.contextmanager
def device_io(link: dict, serial_path: str | None, name: str):
    """The fd the device process gets as stdin/stdout (its UART), or None for a socket link."""
    if link["kind"] == "uart":
        fd = open_raw(serial_path)
        yield fd
    elif link["kind"] == "lora" and link["radio"] == "at":
        with AtModem(link["medium"], name) as modem:
            fd = open_raw(modem.path)
            yield fd
    else:
        yield None


def run(args: argparse.Namespace) -> int:
    if args.drop_outbox and not args.rekey:
        raise UsageError("--drop-outbox goes with --rekey")
    if args.romfs and args.build is None:
        raise UsageError("--romfs goes with --build (a `qis board build --board unix` folder)")
    link = link_config(args)
    profile = args.profile or ("compact" if link["kind"] == "lora" else "full")
    if link["kind"] == "lora" and profile == "full":
        raise UsageError("a full frame (512 bytes) does not fit a LoRa packet: LoRa takes --profile compact")
    state = args.state or Path("var/devices") / args.id
    lost = prepare_state(state, key_path(args.keys, args.id), profile, args.model, args.model_id, args.rekey,
                         args.drop_outbox, args.ask_every, link, args.mqtt_ca if link.get("tls") else None,
                         _rom_model(args))
    if lost:
        print(f"qis device emulate: {len(lost)} frames sealed under the old key are counted as lost "
              f"(counters {lost[0]}..{lost[-1]}, listed in {state / 'lost.log'})", file=sys.stderr)
    summary: dict = {}
    with device_io(link, args.serial, args.id) as fd:
        io = fd if fd is not None else subprocess.DEVNULL
        proc = subprocess.Popen(device_command(state, args.frames, args.offset, args.heap, args.build, args.romfs),
                                stdin=io, stdout=io, stderr=subprocess.PIPE, env=device_env(args.build, args.romfs))
        if fd is not None:
            os.close(fd)
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
                elif event.get("ev") == "answer" and not args.quiet:
                    print(f"[{args.id}] {json.dumps(event)}", file=sys.stderr)
                elif event.get("ev") == "done":
                    summary = event
                if not args.quiet and event.get("ev") in ("progress", "done", "boot", "link"):
                    print(f"[{args.id}] {json.dumps(event)}", file=sys.stderr)
        code = proc.wait()
    if summary:
        print(json.dumps({"device": args.id, **summary, "lost": len(lost)}))
    return code
