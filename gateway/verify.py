"""Open and check device frames on the gateway, and seal ACKs (sans-IO).

This is the gateway's own implementation of docs/PROTOCOL.md, independent of the edge
code's crypto: cbor2 decodes, the `cryptography` package decrypts. Nothing in a frame is
trusted before the AES-CCM tag verifies: before that point only the outer structure, its
size and the key id are looked at. The only edge code used is the deterministic CBOR
encoder, as the canonical-form oracle (re-encode and compare bytes).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from qis.edge import cbor as det_cbor
from qis.edge import frame as spec

from .keys import DeviceKey

PROTECTED = b"\xa1\x01\x0a"  # {1: 10}: alg AES-CCM-16-64-128
TAG_LEN = 8
PROFILE_BY_SIZE = {p.size: p for p in spec.PROFILES.values()}
_FIELDS = ("version", "type", "time", "model", "domain", "label", "confidence", "fingerprint")


class Rejected(Exception):
    """A frame refused, with a reason for the dead-letter table.

    ``authenticated`` is True when the frame verified under a device key (so device and
    counter are known and trustworthy): such a frame is recorded once and acknowledged, so
    the device stops re-sending something that can never be accepted.
    """

    def __init__(self, reason: str, device: str | None = None, counter: int | None = None,
                 authenticated: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.device = device
        self.counter = counter
        self.authenticated = authenticated


@dataclass(frozen=True)
class Outcome:
    """One verified outcome frame."""

    device: str
    kid: bytes
    counter: int
    profile: str
    time: int
    model: int
    domain: int
    label: int
    confidence: int
    fingerprint: bytes
    topk: list[list[int]] = field(default_factory=list)
    ext: dict = field(default_factory=dict)


def _nonce(piv: bytes, base_iv: bytes) -> bytes:
    padded = bytes(13 - len(piv)) + piv
    return bytes(a ^ b for a, b in zip(padded, base_iv))


def _aad() -> bytes:
    return cbor2.dumps(["Encrypt0", PROTECTED, b""])


def parse_cose(frame: bytes) -> tuple[bytes, bytes, bytes]:
    """The (kid, piv, ciphertext) of a frame's COSE_Encrypt0 structure; nothing decrypted."""
    profile = PROFILE_BY_SIZE.get(len(frame))
    if profile is None:
        sizes = ", ".join(f"{p.name} {p.size}" for p in spec.PROFILES.values())
        raise Rejected(f"size {len(frame)} bytes matches no profile ({sizes})")
    try:
        msg = cbor2.loads(frame)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise Rejected(f"not CBOR: {exc}") from None
    if not (isinstance(msg, list) and len(msg) == 3):
        raise Rejected("not a COSE_Encrypt0 array of 3 elements")
    protected, unprotected, ciphertext = msg
    if protected != PROTECTED:
        raise Rejected(f"unsupported protected header {protected!r} (want alg 10, AES-CCM-16-64-128)")
    if not (isinstance(unprotected, dict) and set(unprotected) == {4, 6}):
        raise Rejected("unprotected header must hold exactly kid (4) and partial IV (6)")
    kid, piv = unprotected[4], unprotected[6]
    if not (isinstance(kid, bytes) and len(kid) == spec.KID_LEN and isinstance(piv, bytes) and len(piv) == spec.PIV_LEN):
        raise Rejected(f"kid and partial IV must be {spec.KID_LEN}-byte byte strings")
    if not isinstance(ciphertext, bytes):
        raise Rejected("ciphertext is not a byte string")
    if det_cbor.dumps([protected, {4: kid, 6: piv}, ciphertext]) != frame:
        raise Rejected("non-canonical CBOR in the COSE structure")
    return kid, piv, ciphertext


def _decode_plaintext(plaintext: bytes) -> list:
    """The CBOR array at the head of a padded plaintext; the rest must be zero bytes."""
    stream = io.BytesIO(plaintext)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:
        raise Rejected(f"plaintext is not CBOR: {exc}") from None
    end = stream.tell()
    if any(plaintext[end:]):
        raise Rejected("padding after the plaintext is not all zero")
    try:
        canonical = det_cbor.dumps(value)
    except Exception as exc:
        raise Rejected(f"plaintext holds a value outside the protocol: {exc}") from None
    if canonical != plaintext[:end]:
        raise Rejected("non-canonical CBOR in the plaintext")
    if not isinstance(value, list) or len(value) < 2:
        raise Rejected("plaintext is not an array [version, type, ...]")
    return value


def _uint(name: str, value: object, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise ValueError(f"{name} must be an integer in 0..{limit}, got {value!r}")
    return value


def open_outcome(frame: bytes, registry: dict[bytes, DeviceKey]) -> Outcome:
    """Verify and decode one outcome frame, or raise Rejected with the reason."""
    kid, piv, ciphertext = parse_cose(frame)
    device = registry.get(kid)
    if device is None:
        raise Rejected(f"unknown key id {kid.hex()}")
    try:
        plaintext = AESCCM(device.key, tag_length=TAG_LEN).decrypt(_nonce(piv, spec.UPLINK_IV), ciphertext, _aad())
    except InvalidTag:
        raise Rejected(f"authentication failed for device {device.device}: wrong key, forged or corrupted frame",
                       device=device.device) from None
    counter = int.from_bytes(piv, "big")

    def refuse(reason: str) -> Rejected:
        return Rejected(reason, device=device.device, counter=counter, authenticated=True)

    try:
        value = _decode_plaintext(plaintext)
    except Rejected as exc:
        raise refuse(exc.reason) from None
    if type(value[0]) is not int or value[0] != spec.VERSION:
        raise refuse(f"unsupported version {value[0]!r} (this gateway speaks version {spec.VERSION})")
    if type(value[1]) is not int or value[1] != spec.TYPE_OUTCOME:
        raise refuse(f"unexpected frame type {value[1]!r} (want outcome, {spec.TYPE_OUTCOME})")
    profile = PROFILE_BY_SIZE[len(frame)]
    want = len(_FIELDS) + (2 if profile.topk_max else 0)
    if len(value) != want:
        raise refuse(f"{profile.name} outcome must have {want} fields, got {len(value)}")
    try:
        fields = dict(zip(_FIELDS, value))
        for name, limit in (("time", 0xFFFFFFFF), ("model", 0xFFFF), ("domain", 0xFFFF), ("label", 0xFFFF), ("confidence", 255)):
            _uint(name, fields[name], limit)
        fingerprint = fields["fingerprint"]
        if not isinstance(fingerprint, bytes) or len(fingerprint) != profile.fingerprint_len:
            raise ValueError(f"fingerprint must be {profile.fingerprint_len} bytes")
        topk: list[list[int]] = []
        ext: dict = {}
        if profile.topk_max:
            topk, ext = value[8], value[9]
            if not isinstance(topk, list) or len(topk) > profile.topk_max:
                raise ValueError(f"top-k must be a list of at most {profile.topk_max} pairs")
            for pair in topk:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ValueError("top-k entries must be [label, score] pairs")
                _uint("top-k label", pair[0], 0xFFFF)
                _uint("top-k score", pair[1], 255)
            if not isinstance(ext, dict) or not all(isinstance(k, int) for k in ext):
                raise ValueError("extensions must be a map with integer keys")
    except ValueError as exc:
        raise refuse(str(exc)) from None
    return Outcome(device.device, kid, counter, profile.name, fields["time"], fields["model"], fields["domain"],
                   fields["label"], fields["confidence"], fingerprint, topk, ext)


def seal_ack(device: DeviceKey, counter: int) -> bytes:
    """The ACK frame for (device, counter): always the same bytes for the same pair."""
    piv = counter.to_bytes(spec.PIV_LEN, "big")
    body = cbor2.dumps([spec.VERSION, spec.TYPE_ACK])
    plaintext = body + bytes(spec.ACK_PLAINTEXT_LEN - len(body))
    ciphertext = AESCCM(device.key, tag_length=TAG_LEN).encrypt(_nonce(piv, spec.DOWNLINK_IV), plaintext, _aad())
    return cbor2.dumps([PROTECTED, {4: device.kid, 6: piv}, ciphertext], canonical=True)
