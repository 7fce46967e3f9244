"""Open and check device frames on the gateway, and seal ACKs (sans-IO).

This is the gateway's own implementation of docs/PROTOCOL.md, independent of the edge
code's crypto: the `cryptography` package decrypts. Rules for untrusted bytes:

- Nothing general parses a frame before its AES-CCM tag verifies. The profile is read
  from the frame's length, and the COSE envelope is compared with the profile's fixed
  layout byte by byte (kid and partial IV at known offsets): a stranger's bytes cost one
  comparison of an 18-to-21-byte header and one AES-CCM check, whatever they hold.
- Only an authenticated plaintext is decoded, and only by a strict decoder that accepts
  exactly the deterministic CBOR the schema allows: no tags, no indefinite lengths,
  nesting bounded, every length checked against the bytes left (qis.edge.cbor with
  tags=False; cbor2 resolves shared-value tags and would take exponential time on a
  crafted map key, so it never sees a frame).
- A refusal carries a short code (the unit refusals are counted by) and a short reason
  that never quotes decoded content: only sizes, offsets, type names and small integers.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from qis.edge import cbor as det_cbor
from qis.edge import frame as spec
from qis.edge.errors import DecodeError

from .keys import DeviceKey

PROTECTED = b"\xa1\x01\x0a"  # {1: 10}: alg AES-CCM-16-64-128
TAG_LEN = 8
PROFILE_BY_SIZE = {p.size: p for p in spec.PROFILES.values()}
_FIELDS = ("version", "type", "time", "model", "domain", "label", "confidence", "fingerprint")
# array(3), bstr(3) protected, map(2), label 4, bstr(4) kid | kid | label 6, bstr(4) piv | piv
_HEAD = b"\x83\x43" + PROTECTED + b"\xa2\x04\x44"
_KID_AT, _PIV_HEAD_AT, _PIV_AT, _CT_HEAD_AT = 8, 12, 14, 18
_PIV_HEAD = b"\x06\x44"
REASON_MAX = 160  # characters; a reason is a diagnosis, not a copy of the input


def _ct_head(n: int) -> bytes:
    """Shortest CBOR head of a byte string of n bytes."""
    return bytes([0x40 | n]) if n < 24 else bytes([0x58, n]) if n < 256 else bytes([0x59, n >> 8, n & 0xFF])


# The ciphertext header of each profile's frame: the rest of the layout is the same for all.
_CT_HEADS = {p.size: _ct_head(p.plaintext_len + TAG_LEN) for p in spec.PROFILES.values()}


class Rejected(Exception):
    """A frame refused, with a short code and a reason.

    ``code`` names the kind of refusal (size, envelope, unknown-kid, auth, plaintext,
    version, type, fields, padding, conflict); ``detail`` narrows it where an operator
    needs that (the unknown key id, the device whose key failed). ``authenticated`` is
    True when the frame verified under a device key (so device and counter are known and
    trustworthy): such a frame is recorded once and acknowledged, so the device stops
    re-sending something that can never be accepted.
    """

    def __init__(self, code: str, reason: str, device: str | None = None, counter: int | None = None,
                 authenticated: bool = False, detail: str = "", kid: bytes | None = None) -> None:
        reason = reason[:REASON_MAX]
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.device = device
        self.counter = counter
        self.authenticated = authenticated
        self.detail = detail
        self.kid = kid  # the key id that verified it (authenticated only): its ACK is sealed under it


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

    def as_json(self) -> dict:
        """Every field, byte strings as hex."""
        return {k: jsonable(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Query:
    """One verified query: what did cases with this fingerprint conclude?"""

    device: str
    kid: bytes
    counter: int
    profile: str
    time: int
    model: int
    domain: int
    probe: int
    fingerprint: bytes


@dataclass(frozen=True)
class Envelope:
    """The parts of a frame's COSE_Encrypt0 envelope; nothing in it is authenticated yet."""

    profile: spec.Profile
    kid: bytes
    piv: bytes
    ciphertext: bytes


def _nonce(piv: bytes, base_iv: bytes) -> bytes:
    padded = bytes(13 - len(piv)) + piv
    return bytes(a ^ b for a, b in zip(padded, base_iv))


AAD = cbor2.dumps(["Encrypt0", PROTECTED, b""])


def parse_envelope(frame: bytes) -> Envelope:
    """The profile, kid, partial IV and ciphertext of a frame, read at fixed offsets."""
    profile = PROFILE_BY_SIZE.get(len(frame))
    if profile is None:
        sizes = ", ".join(f"{p.name} {p.size}" for p in spec.PROFILES.values())
        raise Rejected("size", f"size {len(frame)} bytes matches no profile ({sizes})")
    ct_head = _CT_HEADS[profile.size]
    ct_at = _CT_HEAD_AT + len(ct_head)
    for at, want in ((0, _HEAD), (_PIV_HEAD_AT, _PIV_HEAD), (_CT_HEAD_AT, ct_head)):
        got = frame[at:at + len(want)]
        if got != want:
            bad = at + next(i for i in range(len(want)) if got[i] != want[i])
            raise Rejected("envelope", f"byte {bad} breaks the fixed COSE_Encrypt0 layout of a {profile.name} frame "
                                       f"(want {want.hex()} at offset {at})")
    return Envelope(profile, frame[_KID_AT:_PIV_HEAD_AT], frame[_PIV_AT:_CT_HEAD_AT], frame[ct_at:])


def decrypt(envelope: Envelope, registry: dict[bytes, DeviceKey], base_iv: bytes,
            now: float | None = None) -> tuple[DeviceKey, int, bytes]:
    """(device key, counter, plaintext) once the tag verifies; Rejected otherwise. A
    retired key is used only until its accept_until (now: Unix time, default the clock)."""
    device = registry.get(envelope.kid)
    if device is None:
        raise Rejected("unknown-kid", f"unknown key id {envelope.kid.hex()}", detail=envelope.kid.hex())
    if not device.accepts(time.time() if now is None else now):
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(device.accept_until))
        raise Rejected("retired-kid", f"key id {envelope.kid.hex()} of device {device.device} was retired "
                                      f"(accepted until {until})", detail=device.device)
    try:
        plaintext = AESCCM(device.key, tag_length=TAG_LEN).decrypt(_nonce(envelope.piv, base_iv),
                                                                    envelope.ciphertext, AAD)
    except InvalidTag:
        raise Rejected("auth", f"authentication failed for device {device.device}: wrong key, forged or corrupted "
                               "frame", device=device.device, detail=device.device) from None
    return device, int.from_bytes(envelope.piv, "big"), plaintext


def decode_plaintext(plaintext: bytes) -> list:
    """The CBOR array at the head of an authenticated, padded plaintext; ValueError otherwise.

    The rest must be zero bytes. The decoder is the strict one (see the module's rules).
    """
    try:
        value, end = det_cbor.loads_prefix(plaintext, False)
    except DecodeError as exc:
        raise _Refuse("plaintext", f"plaintext is not deterministic CBOR of the schema: {exc}") from None
    if any(plaintext[end:]):
        raise _Refuse("padding", "padding after the plaintext is not all zero")
    if not isinstance(value, list) or len(value) < 2:
        raise _Refuse("plaintext", "plaintext is not an array [version, type, ...]")
    return value


class _Refuse(Exception):
    """A rule broken inside an authenticated plaintext: (code, reason)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _describe(value: object) -> str:
    """A value for a reason text: small integers as themselves, anything else by its type."""
    if type(value) is int and -(10**12) < value < 10**12:
        return str(value)
    return "a " + type(value).__name__


def _uint(name: str, value: object, limit: int) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise _Refuse("fields", f"{name} must be an integer in 0..{limit}, got {_describe(value)}")
    return value


def _check_version_and_type(value: list, types: tuple[int, ...]) -> int:
    if type(value[0]) is not int or value[0] != spec.VERSION:
        raise _Refuse("version", f"unsupported version {_describe(value[0])} (this gateway speaks version "
                                 f"{spec.VERSION})")
    if type(value[1]) is not int or value[1] not in types:
        want = " or ".join(f"{_TYPE_NAMES[t]}, {t}" for t in types)
        raise _Refuse("type", f"unexpected frame type {_describe(value[1])} (want {want})")
    return value[1]


_TYPE_NAMES = {spec.TYPE_OUTCOME: "outcome", spec.TYPE_QUERY: "query"}


def _check_query(value: list, profile: spec.Profile) -> tuple:
    """(time, model, domain, probe, fingerprint) of a decoded query, after checking them."""
    if len(value) != 7:
        raise _Refuse("fields", f"a query must have 7 fields, got {len(value)}")
    for name, limit, item in zip(("time", "model", "domain", "probe"), (0xFFFFFFFF, 0xFFFF, 0xFFFF, 1), value[2:6]):
        _uint(name, item, limit)
    if not isinstance(value[6], bytes) or len(value[6]) != profile.fingerprint_len:
        raise _Refuse("fields", f"fingerprint must be {profile.fingerprint_len} bytes")
    return tuple(value[2:7])


def _check_fields(value: list, profile: spec.Profile) -> tuple[list[list[int]], dict]:
    """The top-k list and extension map of a decoded outcome, after checking every field."""
    want = len(_FIELDS) + (2 if profile.topk_max else 0)
    if len(value) != want:
        raise _Refuse("fields", f"{profile.name} outcome must have {want} fields, got {len(value)}")
    for name, limit, item in zip(("time", "model", "domain", "label", "confidence"),
                                 (0xFFFFFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 255), value[2:7]):
        _uint(name, item, limit)
    if not isinstance(value[7], bytes) or len(value[7]) != profile.fingerprint_len:
        raise _Refuse("fields", f"fingerprint must be {profile.fingerprint_len} bytes")
    if not profile.topk_max:
        return [], {}
    topk, ext = value[8], value[9]
    if not isinstance(topk, list) or len(topk) > profile.topk_max:
        raise _Refuse("fields", f"top-k must be a list of at most {profile.topk_max} pairs")
    for pair in topk:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise _Refuse("fields", "top-k entries must be [label, score] pairs")
        _uint("top-k label", pair[0], 0xFFFF)
        _uint("top-k score", pair[1], 255)
    if not isinstance(ext, dict) or not all(type(k) is int for k in ext):
        raise _Refuse("fields", "extensions must be a map with integer keys")
    return topk, ext


def open_uplink(frame: bytes, registry: dict[bytes, DeviceKey], now: float | None = None) -> Outcome | Query:
    """Verify and decode one uplink frame (an outcome or a query), or raise Rejected."""
    envelope = parse_envelope(frame)
    device, counter, plaintext = decrypt(envelope, registry, spec.UPLINK_IV, now)
    try:
        value = decode_plaintext(plaintext)
        if _check_version_and_type(value, (spec.TYPE_OUTCOME, spec.TYPE_QUERY)) == spec.TYPE_QUERY:
            return Query(device.device, envelope.kid, counter, envelope.profile.name, *_check_query(value,
                                                                                                    envelope.profile))
        topk, ext = _check_fields(value, envelope.profile)
    except _Refuse as exc:
        raise Rejected(exc.code, exc.reason, device=device.device, counter=counter, authenticated=True,
                       kid=envelope.kid) from None
    return Outcome(device.device, envelope.kid, counter, envelope.profile.name, *value[2:8], topk, ext)


def open_outcome(frame: bytes, registry: dict[bytes, DeviceKey], now: float | None = None) -> Outcome:
    """Verify and decode one outcome frame, or raise Rejected with the reason."""
    opened = open_uplink(frame, registry, now)
    if isinstance(opened, Query):
        raise Rejected("type", f"unexpected frame type {spec.TYPE_QUERY} (want outcome, {spec.TYPE_OUTCOME})",
                       device=opened.device, counter=opened.counter, authenticated=True, kid=opened.kid)
    return opened


def seal_answer(device: DeviceKey, counter: int, profile: spec.Profile, status: int, outcomes: int, sites: int,
                labels: list, confirmed: list, models: list) -> bytes:
    """The answer frame to query (device, counter); the gateway stores it and re-sends the
    same bytes for a repeated query (docs/PROTOCOL.md: one downlink message per nonce)."""
    plaintext = bytes(spec.encode_answer(profile, status, outcomes, sites, labels, confirmed, models))
    piv = counter.to_bytes(spec.PIV_LEN, "big")
    ciphertext = AESCCM(device.key, tag_length=TAG_LEN).encrypt(_nonce(piv, spec.DOWNLINK_IV), plaintext, AAD)
    return cbor2.dumps([PROTECTED, {4: device.kid, 6: piv}, ciphertext], canonical=True)


def seal_ack(device: DeviceKey, counter: int) -> bytes:
    """The ACK frame for (device, counter): always the same bytes for the same pair."""
    piv = counter.to_bytes(spec.PIV_LEN, "big")
    body = cbor2.dumps([spec.VERSION, spec.TYPE_ACK])
    plaintext = body + bytes(spec.ACK_PLAINTEXT_LEN - len(body))
    ciphertext = AESCCM(device.key, tag_length=TAG_LEN).encrypt(_nonce(piv, spec.DOWNLINK_IV), plaintext, AAD)
    return cbor2.dumps([PROTECTED, {4: device.kid, 6: piv}, ciphertext], canonical=True)


def seal_multi_ack(device: DeviceKey, counters: list[int]) -> bytes:
    """The multi-ACK (type 4) naming counters of one device: the highest, and a bitmap of
    the 32 below it, in the partial IV (docs/PROTOCOL.md); the same bytes for the same set."""
    top = max(counters)
    bits = 0
    for c in counters:
        if not 0 <= top - c < spec.MULTI_ACK_SPAN:
            raise ValueError(f"counter {c} is outside the {spec.MULTI_ACK_SPAN} below {top}")
        if c != top:
            bits |= 1 << (32 - (top - c))
    piv = top.to_bytes(4, "big") + bits.to_bytes(4, "big")
    plaintext = cbor2.dumps([spec.VERSION, spec.TYPE_MULTI_ACK])
    ciphertext = AESCCM(device.key, tag_length=TAG_LEN).encrypt(_nonce(piv, spec.MULTI_ACK_IV), plaintext, AAD)
    return cbor2.dumps([PROTECTED, {4: device.kid, 6: piv}, ciphertext], canonical=True)


def jsonable(value: object) -> object:
    """A decoded CBOR value as JSON: byte strings (also as map keys) as hex, other keys as text."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k.hex() if isinstance(k, bytes) else str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value
