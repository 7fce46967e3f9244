"""Per-device keys: provisioning and the gateway's key registry.

A device key file is ``DIR/<device>.key``, JSON ``{"device", "kid", "key", "alg"}`` with
hex strings, mode 0600 in a 0700 directory. Key material never appears in a repr, a log
line or an error message; only the device id and the key id (kid) do.
"""
from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GatewayError

KEY_LEN = 16  # AES-CCM-16-64-128
KID_LEN = 4
COSE_ALG_AES_CCM_16_64_128 = 10
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeyFileError(GatewayError):
    """A key file or key directory that cannot be used (named in the message)."""


@dataclass(frozen=True)
class DeviceKey:
    """One device's identity and secret; the secret is kept out of repr()."""

    device: str
    kid: bytes
    key: bytes = field(repr=False)


def check_device_id(device: str) -> str:
    if not _DEVICE_ID.match(device):
        raise KeyFileError(f"device id {device!r} must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)")
    return device


def key_path(keys_dir: Path, device: str) -> Path:
    return Path(keys_dir) / f"{check_device_id(device)}.key"


def provision(device: str, keys_dir: Path) -> DeviceKey:
    """Create a new random key and key id for device; refuse to overwrite an existing one."""
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = key_path(keys_dir, device)
    taken = {k.kid for k in load_registry(keys_dir).values()}
    kid = os.urandom(KID_LEN)
    while kid in taken:  # key ids address devices on a shared medium: keep them unique
        kid = os.urandom(KID_LEN)
    entry = DeviceKey(device, kid, os.urandom(KEY_LEN))
    body = json.dumps({"device": device, "kid": kid.hex(), "key": entry.key.hex(), "alg": COSE_ALG_AES_CCM_16_64_128})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"device {device} already has a key file {path}; refusing to replace it") from None
    with os.fdopen(fd, "w") as f:
        f.write(body + "\n")
    return entry


def read_key_file(path: Path) -> DeviceKey:
    """Read one key file, refusing one that others can read or that is not a regular file."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist (or is a broken symbolic link)") from None
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"key file {path} is not a regular file; move it out of the key directory")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is accessible by group/others (mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"key file {path} cannot be read ({type(exc).__name__})") from None
    try:
        raw = json.loads(text)
        device = raw["device"]
        kid = bytes.fromhex(raw["kid"])
        key = bytes.fromhex(raw["key"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"key file {path} is malformed ({type(exc).__name__})") from None
    # One file per device id: two keys under one id would mix their counters and ACKs.
    if device != path.stem or not _DEVICE_ID.match(device):
        raise KeyFileError(f"key file {path} holds device id {device!r}; it must be a valid id and the file's name")
    if len(kid) != KID_LEN or len(key) != KEY_LEN or raw.get("alg") != COSE_ALG_AES_CCM_16_64_128:
        raise KeyFileError(f"key file {path}: need a {KID_LEN}-byte kid, a {KEY_LEN}-byte key and alg 10")
    return DeviceKey(device, kid, key)


def load_registry(keys_dir: Path) -> dict[bytes, DeviceKey]:
    """All device keys in keys_dir, by key id; the directory must be private (0700)."""
    registry: dict[bytes, DeviceKey] = {}
    keys_dir = Path(keys_dir)
    if not keys_dir.exists():
        return registry
    if not keys_dir.is_dir():
        raise KeyFileError(f"key directory {keys_dir} is not a directory")
    mode = stat.S_IMODE(keys_dir.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"key directory {keys_dir} is accessible by group/others (mode {mode:04o}); chmod 700 it")
    for path in sorted(keys_dir.glob("*.key")):
        entry = read_key_file(path)
        if entry.kid in registry:
            raise KeyFileError(f"key id {entry.kid.hex()} is used by both {registry[entry.kid].device} and {entry.device}")
        registry[entry.kid] = entry
    return registry
