# AES-CCM (edge/ccm.py) against RFC 3610 and cryptography-made vectors; runs under pytest
# and under MicroPython (see tests/edge/edgetest.py).
import json
import os

from edgetest import load, raises, unhex, vector_path

ccm = load("ccm")
errors = load("errors")


def _vectors():
    with open(vector_path("ccm.json")) as f:
        return json.load(f)["vectors"]


def test_vectors_encrypt():
    vs = _vectors()
    assert len(vs) >= 19
    for v in vs:
        c = ccm.CCM(unhex(v["key"]), v["tag_len"])
        got = c.encrypt(unhex(v["nonce"]), unhex(v["plaintext"]), unhex(v["aad"]))
        assert got == unhex(v["ciphertext"]), v["name"]


def test_vectors_decrypt():
    for v in _vectors():
        c = ccm.CCM(unhex(v["key"]), v["tag_len"])
        got = c.decrypt(unhex(v["nonce"]), unhex(v["ciphertext"]), unhex(v["aad"]))
        assert got == unhex(v["plaintext"]), v["name"]


def test_round_trip_sizes_reuses_object():
    c = ccm.CCM(os.urandom(16))
    for n in (0, 1, 15, 16, 17, 255, 256, 257, 511, 512, 513, 1024, 2000):
        nonce = os.urandom(13)
        pt = os.urandom(n)
        aad = os.urandom(n % 40)
        sealed = c.encrypt(nonce, pt, aad)
        assert len(sealed) == n + 8
        assert sealed[:n] != pt or n < 4
        assert c.decrypt(nonce, sealed, aad) == pt


def test_encrypt_into_offset_view_matches_encrypt():
    c = ccm.CCM(os.urandom(16), 16)
    nonce = os.urandom(12)
    pt = os.urandom(100)
    buf = bytearray(5 + 116 + 3)
    n = c.encrypt_into(nonce, pt, b"hdr", memoryview(buf)[5:])
    assert n == 116
    assert bytes(buf[5:121]) == c.encrypt(nonce, pt, b"hdr")
    assert buf[:5] == bytearray(5) and buf[121:] == bytearray(3)


def test_decrypt_accepts_memoryview_and_bytearray():
    c = ccm.CCM(os.urandom(16))
    nonce = os.urandom(13)
    sealed = c.encrypt(nonce, b"observation", b"a")
    assert c.decrypt(nonce, memoryview(sealed), b"a") == b"observation"
    assert c.decrypt(nonce, bytearray(sealed), b"a") == b"observation"


def test_every_flipped_bit_is_rejected():
    c = ccm.CCM(os.urandom(16))
    nonce = os.urandom(13)
    sealed = c.encrypt(nonce, b"0123456789abcdefXYZ", b"aad")
    for i in range(len(sealed)):
        for bit in (0x01, 0x80):
            bad = bytearray(sealed)
            bad[i] ^= bit
            raises(errors.AuthError, c.decrypt, nonce, bad, b"aad")


def test_wrong_key_nonce_or_aad_is_rejected():
    key = os.urandom(16)
    nonce = bytearray(os.urandom(13))
    sealed = ccm.CCM(key).encrypt(nonce, b"payload", b"aad")
    other = bytearray(key)
    other[0] ^= 1
    raises(errors.AuthError, ccm.CCM(other).decrypt, nonce, sealed, b"aad")
    c = ccm.CCM(key)
    raises(errors.AuthError, c.decrypt, nonce, sealed, b"aae")
    raises(errors.AuthError, c.decrypt, nonce, sealed, b"")
    nonce[12] ^= 1
    raises(errors.AuthError, c.decrypt, nonce, sealed, b"aad")


def test_wrong_tag_length_is_rejected():
    key = os.urandom(16)
    nonce = os.urandom(13)
    sealed = ccm.CCM(key, 8).encrypt(nonce, b"payload", b"")
    raises(errors.AuthError, ccm.CCM(key, 16).decrypt, nonce, sealed, b"")
    raises(errors.AuthError, ccm.CCM(key, 4).decrypt, nonce, sealed, b"")


def test_truncated_input_is_rejected():
    c = ccm.CCM(os.urandom(16))
    nonce = os.urandom(13)
    sealed = c.encrypt(nonce, b"payload", b"")
    for n in range(len(sealed)):
        exc = raises(errors.AuthError, c.decrypt, nonce, sealed[:n], b"")
        if n < 8:
            assert "shorter than the 8-byte tag" in str(exc)


def test_bad_parameters_are_named():
    for key in (b"", bytes(15), bytes(17), bytes(24)):
        assert "key must be 16 or 32 bytes" in str(raises(errors.EncodeError, ccm.CCM, key))
    for tag_len in (0, 2, 3, 5, 17, 18):
        assert "tag length" in str(raises(errors.EncodeError, ccm.CCM, bytes(16), tag_len))
    c = ccm.CCM(bytes(16))
    for nonce_len in (0, 6, 14, 16):
        exc = raises(errors.EncodeError, c.encrypt, bytes(nonce_len), b"x", b"")
        assert "nonce must be 7..13 bytes" in str(exc)
        raises(errors.EncodeError, c.decrypt, bytes(nonce_len), bytes(9), b"")
    exc = raises(errors.EncodeError, c.encrypt_into, bytes(13), b"abc", b"", bytearray(10))
    assert "holds 10 bytes, needs 11" in str(exc)


def test_message_length_limit_of_the_nonce():
    # A 13-byte nonce leaves a 2-byte length field: at most 65535 bytes.
    c = ccm.CCM(bytes(16))
    exc = raises(errors.EncodeError, c.encrypt, bytes(13), bytes(65536), b"")
    assert "too long for a 13-byte nonce" in str(exc)
    assert len(c.encrypt(bytes(12), bytes(65536), b"")) == 65544


def test_block_cipher_fips197_vector_in_place_and_multi_block():
    compat = load("compat")
    enc = compat.aes_ecb(unhex("000102030405060708090a0b0c0d0e0f"))
    src = unhex("00112233445566778899aabbccddeeff")
    want = unhex("69c4e0d86a7b0430d8cdb78070b4c55a")  # FIPS-197 appendix C.1
    dst = bytearray(16)
    enc.encrypt(src, dst)
    assert dst == want
    buf = bytearray(src + src)
    enc.encrypt(buf, buf)
    assert buf == want + want
    view = memoryview(bytearray(48))
    enc.encrypt(src, view[16:32])
    assert bytes(view) == bytes(16) + want + bytes(16)


def test_compat_clock_and_random():
    compat = load("compat")
    assert compat.time_s() > 1704067200  # after 2024-01-01, in Unix seconds
    t0 = compat.ticks_ms()
    assert compat.ticks_diff(compat.ticks_ms(), t0) >= 0
    assert compat.ticks_diff(t0, t0 + 5) == -5
    r = compat.urandom(16)
    assert len(r) == 16 and r != compat.urandom(16)
