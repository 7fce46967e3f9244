"""Fixtures for the gateway tests: provisioned device keys and a frame factory.

Frames are made by the real edge code (qis.edge.frame + qis.edge.ccm on CPython); the
malformed ones are built by hand with cbor2 and, where the point is "authenticated but
wrong inside", sealed with the device's real key so that only the content is wrong.
"""
from __future__ import annotations

import os
from pathlib import Path

import cbor2
import pytest

from qis.edge import frame as spec
from qis.edge import stream
from qis.edge.ccm import CCM
from qis.gateway.keys import DeviceKey, load_registry, provision
from qis.gateway.store import OutcomeStore

TIME = 1_700_000_000
COMPACT_FP = bytes.fromhex("a1b2c3d4")
FULL_FP = bytes(range(16))
TOPK = [[3, 200], [1, 40], [0, 15]]


class Frames:
    """Builds frames for the provisioned devices (and strangers) with the edge encoder."""

    TIME = TIME
    COMPACT_FP = COMPACT_FP
    FULL_FP = FULL_FP
    TOPK = TOPK

    def __init__(self, devices: dict[str, DeviceKey]) -> None:
        self.devices = devices

    @staticmethod
    def compact_plaintext(label: int = 3, confidence: int = 200, time: int = TIME) -> bytes:
        """A valid compact plaintext (23 bytes, padded)."""
        return bytes(spec.encode_outcome(spec.COMPACT, time, 2, 1, label, confidence, COMPACT_FP))

    @staticmethod
    def full_plaintext(label: int = 3, confidence: int = 200, time: int = TIME) -> bytes:
        """A valid full plaintext (483 bytes, padded)."""
        return bytes(spec.encode_outcome(spec.FULL, time, 3, 1, label, confidence, FULL_FP, TOPK))

    @staticmethod
    def seal(key: bytes, kid: bytes, counter: int, plaintext: bytes) -> bytes:
        """Seal a padded plaintext as an uplink frame with the edge COSE code."""
        return bytes(spec.seal(CCM(key), kid, counter, plaintext, spec.UPLINK_IV))

    def compact(self, device: str, counter: int, **fields: int) -> bytes:
        d = self.devices[device]
        return self.seal(d.key, d.kid, counter, self.compact_plaintext(**fields))

    def full(self, device: str, counter: int, **fields: int) -> bytes:
        d = self.devices[device]
        return self.seal(d.key, d.kid, counter, self.full_plaintext(**fields))

    def sealed_fields(self, device: str, counter: int, fields: list, profile: spec.Profile = spec.COMPACT,
                      padding: bytes | None = None) -> bytes:
        """Authenticated frame around an arbitrary CBOR value (canonical cbor2 encoding)."""
        return self.sealed_body(device, counter, cbor2.dumps(fields, canonical=True), profile, padding)

    def sealed_body(self, device: str, counter: int, body: bytes, profile: spec.Profile = spec.COMPACT,
                    padding: bytes | None = None) -> bytes:
        """Authenticated frame whose plaintext is body + padding (zeros by default)."""
        if padding is None:
            padding = bytes(profile.plaintext_len - len(body))
        plaintext = body + padding
        assert len(plaintext) == profile.plaintext_len, "test bug: plaintext does not fit the profile"
        d = self.devices[device]
        return self.seal(d.key, d.kid, counter, plaintext)

    @staticmethod
    def outer(protected: object, unprotected: object, ciphertext: bytes, size: int = spec.COMPACT.size) -> bytes:
        """A hand-made outer COSE structure, its ciphertext cut or padded to give `size` bytes."""
        for n in range(size, -1, -1):
            ct = (ciphertext + bytes(size))[:n]
            data = cbor2.dumps([protected, unprotected, ct])
            if len(data) == size:
                return data
        raise AssertionError("test bug: no ciphertext length gives %d bytes" % size)

    @staticmethod
    def compact_fields(label: int = 3, confidence: int = 200) -> list:
        """The decoded list of a valid compact plaintext, to be modified by a test."""
        return [1, 1, TIME, 2, 1, label, confidence, COMPACT_FP]

    @staticmethod
    def full_fields() -> list:
        return [1, 1, TIME, 3, 1, 3, 200, FULL_FP, [list(p) for p in TOPK], {}]

    @staticmethod
    def wire(*frames: bytes) -> bytes:
        """The stream records (00 COBS(frame || CRC32) 00) of frames, back to back."""
        return b"".join(bytes(stream.encode(f)) for f in frames)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def devices(keys_dir: Path) -> dict[str, DeviceKey]:
    """Two provisioned devices, "dev-a" and "dev-b"."""
    return {name: provision(name, keys_dir) for name in ("dev-a", "dev-b")}


@pytest.fixture
def registry(keys_dir: Path, devices: dict[str, DeviceKey]) -> dict[bytes, DeviceKey]:
    """The gateway's registry, loaded from the key files (not from memory)."""
    reg = load_registry(keys_dir)
    assert {k.device for k in reg.values()} == set(devices)
    return reg


@pytest.fixture
def frames(devices: dict[str, DeviceKey]) -> Frames:
    return Frames(devices)


@pytest.fixture
def stranger() -> DeviceKey:
    """A key that is not in the registry (random kid and key)."""
    return DeviceKey("stranger", os.urandom(4), os.urandom(16))


@pytest.fixture
def store(tmp_path: Path):
    s = OutcomeStore(tmp_path / "gw.db")
    yield s
    s.close()
