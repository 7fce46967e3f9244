"""Per-device keys: provisioning, rotation and the gateway's key registry.

A device key file is ``DIR/<device>.key``, JSON ``{"device", "kid", "key", "alg"}`` with
hex strings, mode 0600 in a 0700 directory. Key material never appears in a repr, a log
line or an error message; only the device id and the key id (kid) do.

Rotation (docs/PROTOCOL.md, "Key rotation"): ``rotate()`` gives a device a new key and
key id and keeps the old one in the file's ``"retired"`` list with an ``"accept_until"``
time (Unix seconds). Until then the gateway accepts frames under the old key id too, and
acknowledges each under the key that sealed it, so a device delivers the frames its
outbox sealed before the change; after it, frames under the old key id are refused and
counted as "retired-kid".
"""
from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GatewayError

KEY_LEN = 16  # AES-CCM-16-64-128
KID_LEN = 4
COSE_ALG_AES_CCM_16_64_128 = 10
DEFAULT_GRACE_S = 7 * 24 * 3600  # an old key id is accepted this long after a rotation
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeyFileError(GatewayError):
    """A key file or key directory that cannot be used (named in the message)."""


@dataclass(frozen=True)
class DeviceKey:
    """One device's identity and secret; the secret is kept out of repr(). A retired key
    has accept_until: the Unix time after which its frames are refused."""

    device: str
    kid: bytes
    key: bytes = field(repr=False)
    accept_until: float | None = None

    def accepts(self, now: float) -> bool:
        return self.accept_until is None or now <= self.accept_until


def check_device_id(device: str) -> str:
    if not _DEVICE_ID.match(device):
        raise KeyFileError(f"device id {device!r} must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)")
    return device


def key_path(keys_dir: Path, device: str) -> Path:
    return Path(keys_dir) / f"{check_device_id(device)}.key"


def _new_kid(keys_dir: Path) -> bytes:
    """A random key id no key file in keys_dir uses (current or retired): key ids address
    devices on a shared medium."""
    taken = set(load_registry(keys_dir, retired=True))
    kid = os.urandom(KID_LEN)
    while kid in taken:
        kid = os.urandom(KID_LEN)
    return kid


def _write_key_file(path: Path, current: DeviceKey, retired: list[DeviceKey], replace: bool) -> None:
    """Write a key file 0600: a new file (refusing an existing one), or atomically over the
    old one through a 0600 temporary file."""
    body = {"device": current.device, "kid": current.kid.hex(), "key": current.key.hex(),
            "alg": COSE_ALG_AES_CCM_16_64_128}
    if retired:
        body["retired"] = [{"kid": k.kid.hex(), "key": k.key.hex(), "accept_until": k.accept_until} for k in retired]
    target = path.with_name(path.name + ".tmp") if replace else path
    if replace:
        target.unlink(missing_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"device {current.device} already has a key file {path}; refusing to replace it "
                           "(qis device provision --rotate gives it a new key)") from None
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(body) + "\n")
        f.flush()
        os.fsync(f.fileno())
    if replace:
        os.replace(target, path)


def provision(device: str, keys_dir: Path) -> DeviceKey:
    """Create a new random key and key id for device; refuse to overwrite an existing one."""
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = key_path(keys_dir, device)
    entry = DeviceKey(device, _new_kid(keys_dir), os.urandom(KEY_LEN))
    _write_key_file(path, entry, [], replace=False)
    return entry


def rotate(device: str, keys_dir: Path, grace_s: float = DEFAULT_GRACE_S, now: float | None = None) -> DeviceKey:
    """Give device a new key and key id; its current key is retired and accepted for
    grace_s more seconds. Retired keys whose time has passed are dropped from the file."""
    keys_dir = Path(keys_dir)
    path = key_path(keys_dir, device)
    current, retired = read_key_file(path)
    now = time.time() if now is None else now
    entry = DeviceKey(device, _new_kid(keys_dir), os.urandom(KEY_LEN))
    keep = [k for k in retired if k.accepts(now)]
    _write_key_file(path, entry, [DeviceKey(device, current.kid, current.key, now + grace_s), *keep], replace=True)
    return entry


def read_key_file(path: Path) -> tuple[DeviceKey, list[DeviceKey]]:
    """(current key, retired keys) of one key file, refusing one that others can read or
    that is not a regular file."""
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
        current = _key(device, raw["kid"], raw["key"], None)
        retired = [_key(device, r["kid"], r["key"], float(r["accept_until"])) for r in raw.get("retired", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"key file {path} is malformed ({type(exc).__name__})") from None
    # One file per device id: two keys under one id would mix their counters and ACKs.
    if device != path.stem or not _DEVICE_ID.match(device):
        raise KeyFileError(f"key file {path} holds device id {device!r}; it must be a valid id and the file's name")
    if any(len(k.kid) != KID_LEN or len(k.key) != KEY_LEN for k in (current, *retired)) or \
            raw.get("alg") != COSE_ALG_AES_CCM_16_64_128:
        raise KeyFileError(f"key file {path}: need {KID_LEN}-byte kids, {KEY_LEN}-byte keys and alg 10")
    return current, retired


def _key(device: str, kid: str, key: str, accept_until: float | None) -> DeviceKey:
    return DeviceKey(device, bytes.fromhex(kid), bytes.fromhex(key), accept_until)


def load_registry(keys_dir: Path, retired: bool = True) -> dict[bytes, DeviceKey]:
    """The device keys in keys_dir by key id, retired ones included (they carry their
    accept_until); the directory must be private (0700)."""
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
        current, old = read_key_file(path)
        for entry in (current, *old) if retired else (current,):
            if entry.kid in registry:
                raise KeyFileError(f"key id {entry.kid.hex()} is used by both {registry[entry.kid].device} and "
                                   f"{entry.device}")
            registry[entry.kid] = entry
    return registry
