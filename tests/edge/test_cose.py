# COSE_Encrypt0 (edge/cose.py) against pycose-sealed vectors, plus malformed and forged
# messages; runs under pytest and under MicroPython (see tests/edge/edgetest.py).
import json
import os

from edgetest import load, raises, unhex, vector_path

cbor = load("cbor")
ccm = load("ccm")
cose = load("cose")
errors = load("errors")

UPLINK_IV = b"\x01" + bytes(12)
DOWNLINK_IV = b"\x02" + bytes(12)
KID = b"dev1"
PIV = b"\x00\x00\x00\x2a"


def _vectors():
    with open(vector_path("cose.json")) as f:
        return json.load(f)["vectors"]


def _sealed(pt=b"an outcome frame", key=None):
    c = ccm.CCM(key or os.urandom(16))
    return c, cose.encrypt0(c, KID, PIV, pt, UPLINK_IV)


def _message(prot, unprot, ct):
    return cbor.dumps([prot, unprot, ct])


def test_constants_are_the_rfc_encodings():
    assert cose.PROTECTED == unhex("a1010a")
    # ["Encrypt0", h'a1010a', h'']
    assert cose.AAD == unhex("83" + "68" + "456e637279707430" + "43a1010a" + "40")


def test_vectors_seal_byte_for_byte():
    vs = _vectors()
    assert len(vs) >= 8
    for v in vs:
        c = ccm.CCM(unhex(v["key"]))
        got = cose.encrypt0(c, unhex(v["kid"]), unhex(v["piv"]), unhex(v["plaintext"]), unhex(v["base_iv"]))
        assert got == unhex(v["message"]), v["name"]
        assert isinstance(got, bytes)


def test_vectors_open():
    for v in _vectors():
        c = ccm.CCM(unhex(v["key"]))
        kid, piv, pt = cose.decrypt0(c, unhex(v["message"]), unhex(v["base_iv"]))
        assert (kid, piv, pt) == (unhex(v["kid"]), unhex(v["piv"]), unhex(v["plaintext"])), v["name"]


def test_nonce_and_aad_built_independently():
    # Open the ciphertext with the bare CCM: nonce = piv left-padded XOR base IV.
    key = os.urandom(16)
    c, msg = _sealed(b"payload", key)
    prot, kid, piv, ct = cose.parse0(msg)
    assert (prot, kid, piv) == (unhex("a1010a"), KID, PIV)
    nonce = bytes([UPLINK_IV[i] ^ (b"\x00" * 9 + PIV)[i] for i in range(13)])
    aad = cbor.dumps(["Encrypt0", prot, b""])
    assert ccm.CCM(key).decrypt(nonce, ct, aad) == b"payload"


def test_layout_and_overhead():
    c, msg = _sealed(b"x" * 100)
    # 83 | 43 a1010a | a2 04 44 kid 06 44 piv | 58 6c ct(100)+tag(8)
    assert msg[:7] == unhex("8343a1010aa204")
    assert msg[7:12] == b"\x44" + KID
    assert msg[12:18] == b"\x06\x44" + PIV
    assert msg[18:20] == unhex("586c")
    assert len(msg) == 100 + 28
    assert cbor.loads(msg)[1] == {4: KID, 6: PIV}


def test_round_trip_sizes_and_ivs():
    c = ccm.CCM(os.urandom(16))
    for n in (0, 1, 15, 16, 17, 200, 247, 248, 480, 1024):
        for iv in (UPLINK_IV, DOWNLINK_IV):
            pt = os.urandom(n)
            msg = cose.encrypt0(c, KID, PIV, pt, iv)
            assert cose.decrypt0(c, msg, iv) == (KID, PIV, pt)


def test_out_buffer_returns_view_of_it():
    c = ccm.CCM(os.urandom(16))
    buf = bytearray(600)
    view = cose.encrypt0(c, KID, PIV, b"abc", UPLINK_IV, out=buf)
    assert bytes(view) == cose.encrypt0(c, KID, PIV, b"abc", UPLINK_IV)
    assert bytes(buf[: len(view)]) == bytes(view)
    assert cose.decrypt0(c, view, UPLINK_IV) == (KID, PIV, b"abc")
    exc = raises(errors.EncodeError, cose.encrypt0, c, KID, PIV, bytes(600), UPLINK_IV, buf)
    assert "output buffer holds 600 bytes" in str(exc)


def test_bytearray_inputs():
    c = ccm.CCM(bytearray(os.urandom(16)))
    msg = cose.encrypt0(c, bytearray(KID), bytearray(PIV), bytearray(b"pt"), bytearray(UPLINK_IV))
    assert cose.decrypt0(c, bytearray(msg), bytearray(UPLINK_IV)) == (KID, PIV, b"pt")


def test_every_tampered_byte_is_rejected():
    c, msg = _sealed(b"0123456789")
    kid_at = 8  # the kid's bytes: msg[8:12]
    assert msg[kid_at : kid_at + 4] == KID
    other_device = ccm.CCM(os.urandom(16))
    for i in range(len(msg)):
        for mask in (0x01, 0x40, 0xFF):
            bad = bytearray(msg)
            bad[i] ^= mask
            if kid_at <= i < kid_at + 4:
                # The kid is not authenticated (RFC 9052, empty external_aad): it only picks
                # the key. A changed kid names another device, whose key fails.
                assert cose.decrypt0(c, bad, UPLINK_IV)[0] != KID
                raises(errors.AuthError, cose.decrypt0, other_device, bad, UPLINK_IV)
                continue
            exc = raises(errors.QisError, cose.decrypt0, c, bad, UPLINK_IV)
            assert isinstance(exc, (errors.AuthError, errors.DecodeError, errors.FrameError)), i


def test_wrong_key_or_base_iv_is_auth_error():
    c, msg = _sealed()
    raises(errors.AuthError, cose.decrypt0, ccm.CCM(os.urandom(16)), msg, UPLINK_IV)
    raises(errors.AuthError, cose.decrypt0, c, msg, DOWNLINK_IV)
    exc = raises(errors.AuthError, cose.decrypt0, c, msg, b"\x01" + bytes(11) + b"\x01")
    assert "tag mismatch" in str(exc)


def test_swapped_header_fields_are_auth_error():
    # kid and piv are not in the AAD, but the piv is in the nonce: another piv fails.
    c, msg = _sealed()
    _, kid, piv, ct = cose.parse0(msg)
    forged = _message(cose.PROTECTED, {4: kid, 6: b"\x00\x00\x00\x2b"}, ct)
    raises(errors.AuthError, cose.decrypt0, c, forged, UPLINK_IV)


def test_truncated_or_extended_input_is_decode_error():
    c, msg = _sealed()
    for n in range(len(msg)):
        raises(errors.DecodeError, cose.decrypt0, c, msg[:n], UPLINK_IV)
    exc = raises(errors.DecodeError, cose.decrypt0, c, msg + b"\x00", UPLINK_IV)
    assert "trailing" in str(exc)


def _parse_error(exc_type, data, words):
    exc = raises(exc_type, cose.parse0, data)
    assert words in str(exc), str(exc)


def test_malformed_shapes_are_named():
    ok_u = {4: KID, 6: PIV}
    ct = bytes(12)
    prot = cose.PROTECTED
    _parse_error(errors.DecodeError, cbor.dumps([prot, ok_u]), "array of 3")
    _parse_error(errors.DecodeError, cbor.dumps([prot, ok_u, ct, b""]), "array of 3")
    _parse_error(errors.DecodeError, cbor.dumps({1: 2}), "array of 3")
    _parse_error(errors.DecodeError, b"", "array of 3")
    _parse_error(errors.DecodeError, cbor.dumps(cbor.Tag(16, [prot, ok_u, ct])), "tagged COSE message (tag 16)")
    _parse_error(errors.DecodeError, _message({1: 10}, ok_u, ct), "protected header must be exactly h'a1010a'")
    _parse_error(errors.DecodeError, _message(b"", ok_u, ct), "protected header must be exactly")
    _parse_error(errors.DecodeError, _message(cbor.dumps({1: 10, 5: b"x"}), ok_u, ct), "exactly h'a1010a'")
    _parse_error(errors.DecodeError, _message(cbor.dumps({}), ok_u, ct), "exactly h'a1010a'")
    _parse_error(errors.DecodeError, _message(b"\xa1\x01", ok_u, ct), "exactly h'a1010a'")
    _parse_error(errors.DecodeError, _message(prot, [KID, PIV], ct), "unprotected header must be exactly")
    _parse_error(errors.DecodeError, _message(prot, {4: KID}, ct), "unprotected header must be exactly")
    _parse_error(errors.DecodeError, _message(prot, {6: PIV}, ct), "unprotected header must be exactly")
    _parse_error(errors.DecodeError, _message(prot, {4: KID, 6: PIV, 5: bytes(13)}, ct), "unprotected header")
    _parse_error(errors.DecodeError, _message(prot, {4: "dev1", 6: PIV}, ct), "kid (label 4) must be a byte string")
    _parse_error(errors.DecodeError, _message(prot, {4: b"", 6: PIV}, ct), "kid (label 4) must be a non-empty")
    _parse_error(errors.DecodeError, _message(prot, {4: KID, 6: b""}, ct), "partial IV (label 6) must be 1..13")
    _parse_error(errors.DecodeError, _message(prot, {4: KID, 6: bytes(14)}, ct), "partial IV (label 6)")
    _parse_error(errors.DecodeError, _message(prot, {4: KID, 6: 42}, ct), "partial IV (label 6)")
    _parse_error(errors.DecodeError, _message(prot, ok_u, bytes(7)), "at least 8 bytes")
    _parse_error(errors.DecodeError, _message(prot, ok_u, "text"), "ciphertext must be a byte string")


def test_non_shortest_heads_are_refused():
    # The shape is compared byte by byte, so only the one deterministic encoding passes.
    c, msg = _sealed(b"0123456789")
    kid_long = msg[:7] + b"\x58\x04" + msg[8:]  # the kid's head in the 1-byte-length form
    _parse_error(errors.DecodeError, kid_long, "kid (label 4) must be a byte string in shortest form")
    ct_long = msg[:18] + b"\x58" + bytes([msg[18] - 0x40]) + msg[19:]
    _parse_error(errors.DecodeError, ct_long, "ciphertext must be a byte string in shortest form")


def test_hostile_nesting_costs_one_header_pass():
    # A protected header holding deep shared-value tags (which cbor2 would resolve): the
    # fixed-shape parser refuses at offset 1 without reading further.
    deep = b"\x83\x43\xa1\x01\x0a\xa1" + b"\xd8\x1c\x82" * 150 + bytes(60)
    _parse_error(errors.DecodeError, deep, "unprotected header must be exactly")
    _parse_error(errors.DecodeError, b"\x83" + b"\x9f" * 500, "protected header must be exactly")


def test_other_algorithm_is_frame_error():
    ok_u = {4: KID, 6: PIV}
    for alg in (11, 1, -7):
        _parse_error(errors.FrameError, _message(cbor.dumps({1: alg}), ok_u, bytes(16)), "unsupported COSE algorithm")
    _parse_error(errors.DecodeError, _message(cbor.dumps({1: "A128CCM"}), ok_u, bytes(16)), "exactly h'a1010a'")


def test_bad_seal_arguments_are_named():
    c = ccm.CCM(bytes(16))

    def seal_error(words, kid=KID, piv=PIV, iv=UPLINK_IV, cc=c):
        exc = raises(errors.EncodeError, cose.encrypt0, cc, kid, piv, b"pt", iv)
        assert words in str(exc), str(exc)

    seal_error("kid must be a non-empty byte string", kid=b"")
    seal_error("kid must be a non-empty byte string", kid="dev1")
    seal_error("partial IV must be 1..13 bytes", piv=b"")
    seal_error("partial IV must be 1..13 bytes", piv=bytes(14))
    seal_error("partial IV must be 1..13 bytes", piv=7)
    seal_error("base IV must be 13 bytes, got 12", iv=bytes(12))
    seal_error("needs an 8-byte CCM tag", cc=ccm.CCM(bytes(16), 16))
    _, msg = _sealed()
    exc = raises(errors.EncodeError, cose.decrypt0, c, msg, bytes(14))
    assert "base IV must be 13 bytes, got 14" in str(exc)
