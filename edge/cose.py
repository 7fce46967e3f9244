# COSE_Encrypt0 (RFC 9052 section 5.2) with AES-CCM-16-64-128 (COSE algorithm 10), one
# fixed shape, untagged:
#     [ h'a1010a' ({1: 10}), {4: kid, 6: partial IV}, ciphertext || 8-byte tag ]
# external_aad is empty, so the AAD is the same Enc_structure for every message. The
# 13-byte nonce is the partial IV left-padded with zeros, XOR the 13-byte base IV
# (RFC 9052 section 3.1). Stateless; the CCM object passed in carries the key and buffers.
from . import cbor
from .compat import const
from .errors import DecodeError, EncodeError, FrameError

ALG_AES_CCM_16_64_128 = const(10)
NONCE_LEN = const(13)
TAG_LEN = const(8)
_HDR_ALG = const(1)
_HDR_KID = const(4)
_HDR_PIV = const(6)

PROTECTED = cbor.dumps({_HDR_ALG: ALG_AES_CCM_16_64_128})  # a1 01 0a
# Enc_structure ["Encrypt0", protected, external_aad = h'']: the AAD of every message.
AAD = cbor.dumps(["Encrypt0", PROTECTED, b""])
# array(3), bstr(3) protected, map(2), label 4; the kid, label 6 and the partial IV follow.
_PREFIX = b"\x83\x43" + PROTECTED + b"\xa2\x04"


def _bstr_head(n):
    """CBOR head of a byte string of n bytes (n < 65536)."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return bytes((0x59, n >> 8, n & 0xFF))
    raise EncodeError("cose: byte string of %d bytes is too long" % n)


def _nonce(ccm, piv, base_iv):
    """The CCM nonce: piv left-padded to 13 bytes, XOR base_iv."""
    if ccm.tag_len != TAG_LEN:
        raise EncodeError("cose: algorithm 10 needs an 8-byte CCM tag, the CCM has %d" % ccm.tag_len)
    if len(base_iv) != NONCE_LEN:
        raise EncodeError("cose: base IV must be %d bytes, got %d" % (NONCE_LEN, len(base_iv)))
    nonce = bytearray(base_iv)
    k = NONCE_LEN - len(piv)
    for i in range(len(piv)):
        nonce[k + i] ^= piv[i]
    return nonce


def encrypt0(ccm, kid, piv, plaintext, base_iv, out=None):
    """Seal plaintext as an untagged COSE_Encrypt0 message with key id kid (non-empty bytes)
    and partial IV piv (1..13 bytes, never reused with this key and base IV).

    Returns bytes; or, with out (a writable buffer), writes the message at out[0:] and
    returns a memoryview of it that aliases out (reused by the caller's next call)."""
    if not isinstance(kid, (bytes, bytearray)) or not kid:
        raise EncodeError("cose: kid must be a non-empty byte string, got %r" % (kid,))
    if not isinstance(piv, (bytes, bytearray)) or not 1 <= len(piv) <= NONCE_LEN:
        raise EncodeError("cose: partial IV must be 1..%d bytes, got %r" % (NONCE_LEN, piv))
    nonce = _nonce(ccm, piv, base_iv)
    n = len(plaintext) + TAG_LEN
    head = _PREFIX + _bstr_head(len(kid)) + kid + b"\x06" + _bstr_head(len(piv)) + piv + _bstr_head(n)
    h = len(head)
    if out is None:
        buf = bytearray(h + n)
    elif len(out) < h + n:
        raise EncodeError("cose: output buffer holds %d bytes, the message needs %d" % (len(out), h + n))
    else:
        buf = out
    mv = memoryview(buf)
    mv[:h] = head
    ccm.encrypt_into(nonce, plaintext, AAD, mv[h:])
    return bytes(buf) if out is None else mv[: h + n]


def parse0(data):
    """Structural parse of a message in the one accepted shape, no key needed:
    (protected header bytes, kid, partial IV, ciphertext with tag). DecodeError if the
    message has any other shape; FrameError if it names another algorithm."""
    msg = cbor.loads(data)
    if isinstance(msg, cbor.Tag):
        raise DecodeError("cose: tagged COSE message (tag %d); expected an untagged COSE_Encrypt0" % msg.tag)
    if not isinstance(msg, list) or len(msg) != 3:
        raise DecodeError("cose: COSE_Encrypt0 must be a 3-element array, got %s" % type(msg).__name__)
    prot, unprot, ct = msg
    if not isinstance(prot, bytes):
        raise DecodeError("cose: protected header must be a byte string, got %s" % type(prot).__name__)
    if prot != PROTECTED:
        hdr = cbor.loads(prot) if prot else {}
        if isinstance(hdr, dict) and _HDR_ALG in hdr and hdr[_HDR_ALG] != ALG_AES_CCM_16_64_128:
            raise FrameError("cose: unsupported COSE algorithm %r (only 10, AES-CCM-16-64-128)" % (hdr[_HDR_ALG],))
        raise DecodeError("cose: protected header must be exactly {1: 10}, got %r" % (hdr,))
    if not isinstance(unprot, dict):
        raise DecodeError("cose: unprotected header must be a map, got %s" % type(unprot).__name__)
    extra = [k for k in unprot if k != _HDR_KID and k != _HDR_PIV]
    if extra:
        raise DecodeError("cose: unexpected unprotected header labels %r" % (extra,))
    kid = unprot.get(_HDR_KID)
    piv = unprot.get(_HDR_PIV)
    if not isinstance(kid, bytes) or not kid:
        raise DecodeError("cose: kid (label 4) must be a non-empty byte string, got %r" % (kid,))
    if not isinstance(piv, bytes) or not 1 <= len(piv) <= NONCE_LEN:
        raise DecodeError("cose: partial IV (label 6) must be 1..%d bytes, got %r" % (NONCE_LEN, piv))
    if not isinstance(ct, bytes) or len(ct) < TAG_LEN:
        raise DecodeError("cose: ciphertext must be a byte string of at least %d bytes, got %r" % (TAG_LEN, ct))
    return prot, kid, piv, ct


def decrypt0(ccm, data, base_iv):
    """Open a message sealed by encrypt0: (kid, partial IV, plaintext). DecodeError or
    FrameError for a malformed message, AuthError for a wrong key, base IV or a forgery."""
    _, kid, piv, ct = parse0(data)
    return kid, piv, ccm.decrypt(_nonce(ccm, piv, base_iv), ct, AAD)
