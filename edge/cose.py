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


def _bstr_at(data, pos, what):
    """(start, end) of the byte string whose shortest-form head is at data[pos]."""
    n = len(data)
    ib = data[pos] if pos < n else -1
    if 0x40 <= ib <= 0x57:
        size, start = ib - 0x40, pos + 1
    elif ib == 0x58 and pos + 1 < n and data[pos + 1] >= 24:
        size, start = data[pos + 1], pos + 2
    elif ib == 0x59 and pos + 2 < n and (data[pos + 1] << 8 | data[pos + 2]) >= 256:
        size, start = data[pos + 1] << 8 | data[pos + 2], pos + 3
    else:
        raise DecodeError("cose: %s must be a byte string in shortest form at offset %d" % (what, pos))
    if start + size > n:
        raise DecodeError("cose: truncated %s: %d bytes at offset %d, %d left" % (what, size, start, n - start))
    return start, start + size


def parse0(data):
    """Fixed-shape parse of a message in the one accepted shape, no key needed:
    (protected header bytes, kid, partial IV, ciphertext with tag).

    No general CBOR decoder reads these bytes before the tag is checked: the shape is
    compared byte by byte (83 | 43 a1010a | a2 04 bstr 06 bstr | bstr), so hostile input
    costs one pass over its header. DecodeError if the message has any other shape (a
    non-canonical encoding included); FrameError if it names another algorithm."""
    n = len(data)
    if n < 7 or data[0] != 0x83:
        if n and data[0] == 0xD0:
            raise DecodeError("cose: tagged COSE message (tag 16); expected an untagged COSE_Encrypt0")
        raise DecodeError("cose: expected an untagged COSE_Encrypt0 (83, array of 3, at offset 0)")
    if bytes(data[1:5]) != _PREFIX[1:5]:
        if bytes(data[1:4]) == b"\x43\xa1\x01" and data[4] != 0x0A:
            raise FrameError("cose: unsupported COSE algorithm (header byte 0x%02x; only 10, AES-CCM-16-64-128)"
                             % data[4])
        raise DecodeError("cose: protected header must be exactly h'a1010a' ({1: 10}) at offset 1")
    if data[5] != 0xA2 or data[6] != _HDR_KID:
        raise DecodeError("cose: unprotected header must be exactly {4: kid, 6: partial IV} at offset 5")
    k0, k1 = _bstr_at(data, 7, "kid (label 4)")
    if k1 == k0:
        raise DecodeError("cose: kid (label 4) must be a non-empty byte string")
    if k1 >= n or data[k1] != _HDR_PIV:
        raise DecodeError("cose: unprotected header must be exactly {4: kid, 6: partial IV} at offset %d" % k1)
    p0, p1 = _bstr_at(data, k1 + 1, "partial IV (label 6)")
    if not 1 <= p1 - p0 <= NONCE_LEN:
        raise DecodeError("cose: partial IV (label 6) must be 1..%d bytes, got %d" % (NONCE_LEN, p1 - p0))
    c0, c1 = _bstr_at(data, p1, "ciphertext")
    if c1 - c0 < TAG_LEN:
        raise DecodeError("cose: ciphertext must be a byte string of at least %d bytes, got %d" % (TAG_LEN, c1 - c0))
    if c1 != n:
        raise DecodeError("cose: %d trailing bytes at offset %d" % (n - c1, c1))
    return PROTECTED, bytes(data[k0:k1]), bytes(data[p0:p1]), data[c0:c1]


def decrypt0(ccm, data, base_iv):
    """Open a message sealed by encrypt0: (kid, partial IV, plaintext). DecodeError or
    FrameError for a malformed message, AuthError for a wrong key, base IV or a forgery."""
    _, kid, piv, ct = parse0(data)
    return kid, piv, ccm.decrypt(_nonce(ccm, piv, base_iv), ct, AAD)
