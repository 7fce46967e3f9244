"""What gateways send each other: forwarded records, questions to owners and their replies,
each signed by its site as a COSE_Sign1 with Ed25519 (docs/PROTOCOL.md, "Federation").

Rules for the bytes of a peer (untrusted until the signature checks):
- The Sign1 envelope has one fixed layout, compared byte by byte: array(4), the protected
  header h'a10127' ({1: -8}, EdDSA), the unprotected map {4: site kid (8 bytes)}, the
  payload as a byte string of at most MAX_PAYLOAD bytes, and a 64-byte signature. The kid
  names a site of the federation's sites file, or the message is refused.
- Only after the signature verifies over the Sig_structure is the payload decoded, by the
  strict decoder (qis.edge.cbor with tags=False: no tags, no indefinite lengths, bounded
  depth), and its fields checked.
- A record carries no device id, key id or raw data: a site-scoped pseudonym, the domain,
  the model, the label, the confidence quantized to 8 levels, the fingerprint, the hour,
  and an outcome id that only its site can link to a device.
"""
from __future__ import annotations

from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature

from qis.edge import cbor as det_cbor
from qis.edge.errors import DecodeError
from qis.edge.frame import PROFILES

from .sites import SITE_KID_LEN, PeerSite, Site

VERSION = 1
KIND_OUTCOME, KIND_CONFIRMATION, KIND_ASK, KIND_REPLY, KIND_PLAN = 1, 2, 3, 4, 5
PROTECTED = b"\xa1\x01\x27"  # {1: -8}: EdDSA
_HEAD = b"\x84\x43" + PROTECTED + b"\xa1\x04\x48"  # array(4), protected, {4: bstr(8)
SIG_LEN = 64
MAX_PAYLOAD = 65535  # replies; records are far smaller (MAX_RECORD)
MAX_RECORD = 512
CONF_LEVELS = 8  # a record's confidence: 0..7, the frame's 0..255 >> 5
_PROFILE_CODE = {"compact": 0, "full": 1}
_PROFILE_NAME = {v: k for k, v in _PROFILE_CODE.items()}


class Refused(Exception):
    """A peer's message refused: a short code (counted by) and a reason that names it."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Record:
    """One outcome (kind 1) or confirmation (kind 2), as the federation sees it."""

    kind: int
    outcome_id: bytes
    site: str
    pseudonym: bytes
    domain: int
    model: int
    label: int  # the device's conclusion
    confidence: int  # 0..7
    profile: str
    fingerprint: bytes
    hour: int  # Unix time // 3600: coarse on purpose
    confirmed: int | None = None  # the clinician's label (kind 2)

    def payload(self) -> list:
        return [VERSION, self.kind, self.outcome_id, self.site, self.pseudonym, self.domain, self.model, self.label,
                self.confidence, _PROFILE_CODE[self.profile], self.fingerprint, self.hour, self.confirmed]

    @property
    def msg_id(self) -> str:
        """The bus's deduplication id: a re-publish of the same record is dropped."""
        return f"{self.outcome_id.hex()}.{self.kind}"


def record_from_row(site: Site, row: tuple) -> Record:
    """The record of one journal row of the site's database (gateway.store.Journal.rows)."""
    _, device, counter, t, model, domain, label, confidence, fingerprint, profile, confirmed = row
    return Record(KIND_OUTCOME if confirmed is None else KIND_CONFIRMATION, site.outcome_id(device, counter),
                  site.name, site.pseudonym(device), domain, model, label, confidence >> 5, profile, bytes(fingerprint),
                  t // 3600, confirmed)


def _bstr_head(n: int) -> bytes:
    return bytes([0x40 | n]) if n < 24 else bytes([0x58, n]) if n < 256 else bytes([0x59, n >> 8, n & 0xFF])


def _sig_structure(payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", PROTECTED, b"", payload])


def sign(site: Site, payload_value: list) -> bytes:
    """A COSE_Sign1 message of the site over the CBOR encoding of payload_value."""
    return sign_bytes(site, det_cbor.dumps(payload_value))


def sign_bytes(site: Site, payload: bytes) -> bytes:
    """A COSE_Sign1 message of the site over payload (any bytes: tests sign hostile ones)."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    signature = site.sign(_sig_structure(payload))
    return _HEAD + site.kid + _bstr_head(len(payload)) + payload + b"\x58\x40" + signature


def open_signed(data: bytes, sites: dict[bytes, PeerSite], max_payload: int = MAX_PAYLOAD) -> tuple[PeerSite, list]:
    """(signing site, decoded payload) of a Sign1 message from a federation site."""
    if len(data) > max_payload + 64 + 32:
        raise Refused("size", f"message of {len(data)} bytes exceeds {max_payload + 96}")
    kid_end = len(_HEAD) + SITE_KID_LEN
    if data[:len(_HEAD)] != _HEAD or len(data) < kid_end + 1 + 2 + SIG_LEN:
        raise Refused("layout", "not a COSE_Sign1 of the fixed layout (EdDSA, {4: 8-byte kid})")
    kid = data[len(_HEAD):kid_end]
    head = data[kid_end]
    if 0x40 <= head <= 0x57:
        n, start = head - 0x40, kid_end + 1
    elif head == 0x58 and data[kid_end + 1] >= 24:
        n, start = data[kid_end + 1], kid_end + 2
    elif head == 0x59 and (data[kid_end + 1] << 8 | data[kid_end + 2]) >= 256:
        n, start = data[kid_end + 1] << 8 | data[kid_end + 2], kid_end + 3
    else:
        raise Refused("layout", "payload is not a byte string in shortest form")
    end = start + n
    if n > max_payload:
        raise Refused("size", f"payload of {n} bytes exceeds {max_payload}")
    if data[end:end + 2] != b"\x58\x40" or len(data) != end + 2 + SIG_LEN:
        raise Refused("layout", "not a COSE_Sign1 of the fixed layout (a 64-byte signature last)")
    peer = sites.get(bytes(kid))
    if peer is None:
        raise Refused("unknown-site", f"unknown site key id {bytes(kid).hex()}")
    payload = bytes(data[start:end])
    try:
        peer.verify(bytes(data[end + 2:]), _sig_structure(payload))
    except InvalidSignature:
        raise Refused("signature", f"bad signature for site {peer.name}") from None
    try:
        value = det_cbor.loads(payload, False)
    except DecodeError as exc:
        raise Refused("payload", f"payload of site {peer.name} is not deterministic CBOR: {exc}") from None
    if not isinstance(value, list) or len(value) < 2 or value[0] != VERSION:
        raise Refused("payload", f"payload of site {peer.name} is not [version {VERSION}, kind, ...]")
    return peer, value


def _uint(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit


def open_record(data: bytes, sites: dict[bytes, PeerSite]) -> Record:
    """A verified record from a federation site; Refused with the reason otherwise."""
    peer, v = open_signed(data, sites, MAX_RECORD)
    if len(v) != 13 or v[1] not in (KIND_OUTCOME, KIND_CONFIRMATION):
        raise Refused("payload", f"record of site {peer.name} is not an outcome or confirmation of 13 fields")
    _, kind, oid, site, pseudo, domain, model, label, conf, profile, fingerprint, hour, confirmed = v
    prof = PROFILES.get(_PROFILE_NAME.get(profile, ""))
    ok = (isinstance(oid, bytes) and len(oid) == 16 and isinstance(pseudo, bytes) and len(pseudo) == 8
          and _uint(domain, 0xFFFF) and _uint(model, 0xFFFF) and _uint(label, 0xFFFF)
          and _uint(conf, CONF_LEVELS - 1) and prof is not None and isinstance(fingerprint, bytes)
          and len(fingerprint) == prof.fingerprint_len and _uint(hour, 0xFFFFFFFF)
          and (confirmed is None if kind == KIND_OUTCOME else _uint(confirmed, 0xFFFF)))
    if not ok:
        raise Refused("payload", f"record of site {peer.name} has a field out of range")
    if site != peer.name:
        raise Refused("site", f"record names site {site!r} but is signed by {peer.name}")
    return Record(kind, oid, site, pseudo, domain, model, label, conf, prof.name, fingerprint, hour, confirmed)


def seal_record(site: Site, record: Record) -> bytes:
    if record.site != site.name:
        raise ValueError(f"record of site {record.site} cannot be signed by {site.name}")
    return sign(site, record.payload())
