# AES-CCM (RFC 3610, NIST SP 800-38C) on a block cipher in ECB mode (compat.aes_ecb).
#
# Rules
# - One CCM object per key; it owns preallocated work buffers (MAC state, counter block,
#   keystream chunk), so it is not reentrant: do not share one object between threads.
# - Tag length M: 4..16, even. Nonce length: 7..13 bytes (L = 15 - nonce length).
# - decrypt() checks the tag in constant time and returns no plaintext unless it matches.
# - The byte loops are @micropython.viper functions; on CPython the same source runs as
#   plain Python (compat's stand-in decorator and ptr8 cast are identities).
from .compat import aes_ecb, const, micropython, ptr8
from .errors import AuthError, EncodeError

_BLOCK = const(16)
_CHUNK = const(256)  # keystream bytes produced per block-cipher call (multiple of 16)


@micropython.viper
def _mac(enc, xbuf, data: ptr8, n: int):
    """CBC-MAC step: for each 16-byte block of data[0:n] (the last one zero-padded),
    xbuf ^= block; xbuf = E(xbuf)."""
    x = ptr8(xbuf)
    o = 0
    while o < n:
        m = n - o
        if m > 16:
            m = 16
        for i in range(m):
            x[i] ^= data[o + i]
        enc(xbuf, xbuf)
        o += 16


@micropython.viper
def _fill_counters(ks: ptr8, a: ptr8, nblk: int):
    """Write nblk successive counter blocks into ks, starting at a; advance a past them."""
    o = 0
    end = nblk * 16
    while o < end:
        for i in range(16):
            ks[o + i] = a[i]
        j = 15
        while j > 0:  # big-endian increment; the length limit keeps it inside the counter
            v = int(a[j]) + 1
            a[j] = v & 0xFF
            if v < 256:
                break
            j -= 1
        o += 16


@micropython.viper
def _xor_into(dst: ptr8, off: int, src: ptr8, n: int):
    """dst[off:off+n] ^= src[0:n]."""
    for i in range(n):
        dst[off + i] ^= src[i]


@micropython.viper
def _differ(a: ptr8, b: ptr8, n: int) -> int:
    """Non-zero if a[0:n] != b[0:n]; time independent of where they differ."""
    acc = 0
    for i in range(n):
        acc |= int(a[i]) ^ int(b[i])
    return acc


class CCM:
    """AES-CCM with a fixed key and tag length; encrypt/decrypt take nonce and AAD."""

    def __init__(self, key, tag_len=8):
        if len(key) not in (16, 32):  # MicroPython's cryptolib has no AES-192
            raise EncodeError("CCM key must be 16 or 32 bytes, got %d" % len(key))
        if tag_len < 4 or tag_len > 16 or tag_len & 1:
            raise EncodeError("CCM tag length must be even and 4..16, got %d" % tag_len)
        self.tag_len = tag_len
        self._enc = aes_ecb(key).encrypt
        self._x = bytearray(_BLOCK)  # CBC-MAC state
        self._a = bytearray(_BLOCK)  # next counter block
        self._s0 = bytearray(_BLOCK)  # E(A_0), masks the tag
        self._ks = bytearray(_CHUNK)  # keystream chunk
        self._ksv = memoryview(self._ks)

    def encrypt(self, nonce, plaintext, aad=b""):
        """ciphertext || tag (len(plaintext) + tag_len bytes)."""
        out = bytearray(len(plaintext) + self.tag_len)
        self.encrypt_into(nonce, plaintext, aad, out)
        return bytes(out)

    def encrypt_into(self, nonce, plaintext, aad, out):
        """Write ciphertext || tag into out[0:len(plaintext) + tag_len] (out: a writable
        buffer, a memoryview for an offset; it must not overlap plaintext). Returns the
        number of bytes written."""
        n = len(plaintext)
        end = n + self.tag_len
        if len(out) < end:
            raise EncodeError("CCM output buffer holds %d bytes, needs %d" % (len(out), end))
        self._start(nonce, n, aad)
        _mac(self._enc, self._x, plaintext, n)
        out[:n] = plaintext
        self._ctr(out, n)
        self._tag(out, n)
        return end

    def decrypt(self, nonce, data, aad=b""):
        """The plaintext of data = ciphertext || tag; AuthError if the tag does not match."""
        m = self.tag_len
        n = len(data) - m
        if n < 0:
            raise AuthError("CCM input of %d bytes is shorter than the %d-byte tag" % (len(data), m))
        self._start(nonce, n, aad)
        mv = memoryview(data)
        out = bytearray(mv[:n])
        self._ctr(out, n)
        _mac(self._enc, self._x, out, n)
        # The expected tag goes into the keystream buffer, compared there in place.
        ks = self._ks
        ks[:m] = self._x[:m]
        _xor_into(ks, 0, self._s0, m)
        if _differ(ks, mv[n:], m):
            raise AuthError("CCM tag mismatch: wrong key, nonce or AAD, or corrupted data")
        return bytes(out)

    def _start(self, nonce, n, aad):
        """Check lengths; set the MAC state to the CBC-MAC of B_0 and the AAD; set the
        counter block to A_1 and s0 to E(A_0)."""
        q = 15 - len(nonce)  # L: bytes of the length field and the counter
        if q < 2 or q > 8:
            raise EncodeError("CCM nonce must be 7..13 bytes, got %d" % len(nonce))
        if q < 8 and n >> (8 * q):
            raise EncodeError("CCM message of %d bytes too long for a %d-byte nonce" % (n, len(nonce)))
        la = len(aad)
        if la >> 32:
            raise EncodeError("CCM AAD of %d bytes is too long" % la)
        x = self._x
        x[0] = (0x40 if la else 0) | ((self.tag_len - 2) << 2) | (q - 1)
        x[1 : 16 - q] = nonce
        i = 15
        while i > 15 - q:
            x[i] = n & 0xFF
            n >>= 8
            i -= 1
        enc = self._enc
        enc(x, x)
        if la:
            # First AAD block: the encoded length, then as much of the AAD as fits.
            b = self._ks
            if la < 0xFF00:
                b[0] = la >> 8
                b[1] = la & 0xFF
                h = 2
            else:
                b[0:6] = b"\xff\xfe" + bytes((la >> 24, (la >> 16) & 0xFF, (la >> 8) & 0xFF, la & 0xFF))
                h = 6
            k = min(la, 16 - h)
            b[h : h + k] = aad[:k]
            _mac(enc, x, b, h + k)
            if la > k:
                _mac(enc, x, memoryview(aad)[k:], la - k)
        a = self._a
        a[0] = q - 1
        a[1 : 16 - q] = nonce
        for i in range(16 - q, 16):
            a[i] = 0
        enc(a, self._s0)
        a[15] = 1

    def _ctr(self, buf, n):
        """buf[0:n] ^= the keystream from the current counter block on."""
        ks = self._ks
        enc = self._enc
        done = 0
        while done < n:
            k = min(n - done, _CHUNK)
            nblk = (k + 15) >> 4
            _fill_counters(ks, self._a, nblk)
            if nblk == _CHUNK // 16:
                enc(ks, ks)
            else:
                v = self._ksv[: nblk << 4]
                enc(v, v)
            _xor_into(buf, done, ks, k)
            done += k

    def _tag(self, out, n):
        """out[n:n+M] = first M bytes of the MAC state ^ s0."""
        m = self.tag_len
        out[n : n + m] = self._x[:m]
        _xor_into(out, n, self._s0, m)
