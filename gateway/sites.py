"""Site identities of a federation: each clinic's gateway signs what it forwards.

A site key file (``qis site provision``) is JSON ``{"site", "ed25519", "pseudonym"}``,
hex strings, mode 0600: the Ed25519 private key that signs the site's records and
replies, and the secret that turns device ids into site-scoped pseudonyms. The
federation's sites file is JSON ``{"sites": {site: public key hex}}``: configuration,
shared by every gateway; a record from a site not in it is refused.

A site's key id (the COSE kid of its signatures) is the first 8 bytes of sha256 of its
public key. No private key appears in a repr, a log line or a message.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from .errors import GatewayError

SITE_KID_LEN = 8
_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


class SiteKeyError(GatewayError):
    """A site key file or sites file that cannot be used (named in the message)."""


def site_kid(public: bytes) -> bytes:
    return hashlib.sha256(public).digest()[:SITE_KID_LEN]


@dataclass(frozen=True)
class Site:
    """This gateway's site: its name, signing key and pseudonym secret."""

    name: str
    private: Ed25519PrivateKey = field(repr=False)
    pseudonym_secret: bytes = field(repr=False)

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def kid(self) -> bytes:
        return site_kid(self.public)

    def pseudonym(self, device: str) -> bytes:
        """The site-scoped pseudonym of a device: the same device, the same 8 bytes, at this
        site only; peers never see a device id or key id."""
        return hmac.new(self.pseudonym_secret, b"device:" + device.encode(), hashlib.sha256).digest()[:8]

    def outcome_id(self, device: str, counter: int) -> bytes:
        """A federation-wide id of one outcome, unlinkable to the device without the secret."""
        return hmac.new(self.pseudonym_secret, b"outcome:%s:%d" % (device.encode(), counter), hashlib.sha256).digest()[:16]

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


@dataclass(frozen=True)
class PeerSite:
    name: str
    public: Ed25519PublicKey

    def verify(self, signature: bytes, message: bytes) -> None:
        self.public.verify(signature, message)  # raises InvalidSignature


def provision_site(name: str, path: Path) -> Site:
    """Create a new site key file (0600); refuse to overwrite one."""
    if not _SITE_ID.match(name):
        raise SiteKeyError(f"site id {name!r} must be 1-32 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)")
    site = Site(name, Ed25519PrivateKey.generate(), os.urandom(32))
    raw = site.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SiteKeyError(f"{path} already exists; refusing to replace a site key") from None
    with os.fdopen(fd, "w") as f:
        json.dump({"site": name, "ed25519": raw.hex(), "pseudonym": site.pseudonym_secret.hex()}, f)
        f.write("\n")
    return site


def load_site(path: Path) -> Site:
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SiteKeyError(f"site key file {path} cannot be read ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SiteKeyError(f"site key file {path} is accessible by group/others (mode {stat.S_IMODE(mode):04o}); "
                           "chmod 600 it")
    try:
        raw = json.loads(path.read_text())
        site = Site(raw["site"], Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw["ed25519"])),
                    bytes.fromhex(raw["pseudonym"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SiteKeyError(f"site key file {path} is malformed ({type(exc).__name__})") from None
    if not _SITE_ID.match(site.name) or len(site.pseudonym_secret) != 32:
        raise SiteKeyError(f"site key file {path}: need a valid site id and a 32-byte pseudonym secret")
    return site


def load_sites(path: Path) -> dict[bytes, PeerSite]:
    """The federation's sites by key id, from the sites file."""
    try:
        raw = json.loads(Path(path).read_text())["sites"]
        sites = {}
        for name, public_hex in raw.items():
            public = bytes.fromhex(public_hex)
            if not _SITE_ID.match(name) or len(public) != 32:
                raise ValueError(name)
            sites[site_kid(public)] = PeerSite(name, Ed25519PublicKey.from_public_bytes(public))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SiteKeyError(f"sites file {path} is malformed or unreadable ({type(exc).__name__}); it must be "
                           '{"sites": {"<site>": "<ed25519 public key hex>"}}') from None
    return sites


def add_to_sites_file(path: Path, site: Site) -> None:
    """Add a site's public key to a federation's sites file (created if missing)."""
    path = Path(path)
    try:
        known = json.loads(path.read_text())["sites"] if path.exists() else {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SiteKeyError(f"sites file {path} is malformed or unreadable ({type(exc).__name__})") from None
    known[site.name] = site.public.hex()
    path.write_text(json.dumps({"sites": known}, indent=1) + "\n")
