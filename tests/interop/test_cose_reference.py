"""Cross-implementation checks of edge/ccm.py and edge/cose.py.

Messages sealed by the edge code running under the real MicroPython unix port are opened
by pycose and by `cryptography`'s AESCCM (nonce and AAD built here, independently), and
pycose-sealed messages are opened by the edge code under MicroPython. The golden vector
files are re-checked against the same oracles.
"""
from __future__ import annotations

import json
import random

import cbor2
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from pycose.algorithms import AESCCM1664128
from pycose.headers import KID, Algorithm, PartialIV
from pycose.keys import SymmetricKey
from pycose.keys.keyparam import KpBaseIV
from pycose.messages import Enc0Message

from mp import ROOT, mp_lines, pycose_open

VECTORS = ROOT / "tests" / "vectors"
UPLINK_IV = b"\x01" + bytes(12)
DOWNLINK_IV = b"\x02" + bytes(12)


def _pycose_seal(key: bytes, kid: bytes, piv: bytes, plaintext: bytes, base_iv: bytes) -> bytes:
    msg = Enc0Message(phdr={Algorithm: AESCCM1664128}, uhdr={KID: kid, PartialIV: piv}, payload=plaintext)
    msg.key = SymmetricKey(k=key, optional_params={KpBaseIV: base_iv})
    return msg.encode(tag=False)


def _reference_open(message: bytes, key: bytes, base_iv: bytes) -> tuple[bytes, bytes, bytes]:
    """(kid, piv, plaintext) using cbor2 + AESCCM only: the nonce and AAD of RFC 9052."""
    protected, unprotected, ciphertext = cbor2.loads(message)
    assert cbor2.loads(protected) == {1: 10}
    assert sorted(unprotected) == [4, 6]
    piv = unprotected[6]
    nonce = bytes(a ^ b for a, b in zip(base_iv, piv.rjust(13, b"\x00")))
    aad = cbor2.dumps(["Encrypt0", protected, b""])
    return unprotected[4], piv, AESCCM(key, tag_length=8).decrypt(nonce, ciphertext, aad)


def test_pycose_names_alg_10_as_aes_ccm_16_64_128() -> None:
    assert AESCCM1664128.identifier == 10
    assert AESCCM1664128.get_tag_length() == 8 and AESCCM1664128.get_key_length() == 16


def test_ccm_vector_file_matches_cryptography() -> None:
    vectors = json.loads((VECTORS / "ccm.json").read_text())["vectors"]
    assert sum(v["name"].startswith("RFC 3610") for v in vectors) == 3
    for v in vectors:
        key, nonce, aad, pt = (bytes.fromhex(v[k]) for k in ("key", "nonce", "aad", "plaintext"))
        ref = AESCCM(key, tag_length=v["tag_len"]).encrypt(nonce, pt, aad)
        assert ref.hex() == v["ciphertext"], v["name"]


def test_cose_vector_file_matches_pycose_and_cryptography() -> None:
    for v in json.loads((VECTORS / "cose.json").read_text())["vectors"]:
        key, kid, piv, biv, pt, message = (
            bytes.fromhex(v[k]) for k in ("key", "kid", "piv", "base_iv", "plaintext", "message"))
        assert pycose_open(message, key, biv).decrypt() == pt, v["name"]
        assert _reference_open(message, key, biv) == (kid, piv, pt), v["name"]
        assert message == _pycose_seal(key, kid, piv, pt, biv), v["name"]


MP_SEAL_BATCH = """
import os
from edge import ccm, cose
sizes = list(range(0, 40)) + [47, 48, 49, 127, 128, 200, 255, 256, 257, 400, 479, 480, 481, 500]
r = os.urandom(len(sizes))
for i, n in enumerate(sizes):
    key = os.urandom(16)
    kid = os.urandom(1 + r[i] % 8)
    piv = os.urandom(1 + r[i] % 5)
    iv = b"\\x02" + bytes(12) if i % 2 else b"\\x01" + bytes(12)
    pt = os.urandom(n)
    msg = cose.encrypt0(ccm.CCM(key), kid, piv, pt, iv)
    print(",".join(x.hex() for x in (key, kid, piv, iv, pt, msg)))
"""


def test_micropython_sealed_messages_open_in_pycose_and_cryptography() -> None:
    lines = mp_lines(MP_SEAL_BATCH)
    assert len(lines) == 54
    sizes = set()
    for line in lines:
        key, kid, piv, iv, pt, message = (bytes.fromhex(x) for x in line.split(","))
        assert pycose_open(message, key, iv).decrypt() == pt
        assert _reference_open(message, key, iv) == (kid, piv, pt)
        other_iv = DOWNLINK_IV if iv == UPLINK_IV else UPLINK_IV
        with pytest.raises(InvalidTag):  # the oracle does check: the other direction's IV fails
            pycose_open(message, key, other_iv).decrypt()
        sizes.add(len(pt))
    assert min(sizes) == 0 and max(sizes) == 500


MP_OPEN_BATCH = """
import sys, json
from edge import ccm, cose, errors
for case in json.loads(sys.stdin.read()):
    key, msg, iv = [bytes.fromhex(case[k]) for k in ("key", "message", "base_iv")]
    try:
        kid, piv, pt = cose.decrypt0(ccm.CCM(key), msg, iv)
        print("ok:%s:%s:%s" % (kid.hex(), piv.hex(), pt.hex()))
    except errors.QisError as exc:
        print(type(exc).__name__)
"""


def test_pycose_sealed_messages_open_under_micropython() -> None:
    rng = random.Random(20240)
    cases, expected = [], []
    for n in list(range(0, 20)) + [rng.randrange(20, 501) for _ in range(30)] + [500]:
        key, kid, piv = rng.randbytes(16), rng.randbytes(rng.randrange(1, 9)), rng.randbytes(rng.randrange(1, 6))
        iv = rng.choice((UPLINK_IV, DOWNLINK_IV))
        pt = rng.randbytes(n)
        message = _pycose_seal(key, kid, piv, pt, iv)
        cases.append({"key": key.hex(), "message": message.hex(), "base_iv": iv.hex()})
        expected.append("ok:%s:%s:%s" % (kid.hex(), piv.hex(), pt.hex()))
        # The same message with a flipped ciphertext bit, and under the wrong base IV.
        forged = bytearray(message)
        forged[-1 - rng.randrange(n + 8)] ^= 1 << rng.randrange(8)
        cases.append({"key": key.hex(), "message": forged.hex(), "base_iv": iv.hex()})
        cases.append({"key": key.hex(), "message": message.hex(), "base_iv": (DOWNLINK_IV if iv == UPLINK_IV else UPLINK_IV).hex()})
        expected += ["AuthError", "AuthError"]
    assert mp_lines(MP_OPEN_BATCH, json.dumps(cases).encode()) == expected


MP_CCM_BATCH = """
import os
from edge import ccm
for tag_len, nonce_len, pt_len, aad_len in %r:
    key = os.urandom(16 if tag_len %% 4 else 32)
    nonce, pt, aad = os.urandom(nonce_len), os.urandom(pt_len), os.urandom(aad_len)
    out = ccm.CCM(key, tag_len).encrypt(nonce, pt, aad)
    print(",".join(x.hex() for x in (key, nonce, pt, aad, out)) + ",%%d" %% tag_len)
"""


@pytest.mark.parametrize("aad_len", [0, 1, 14, 15, 16, 100, 0xFEFF, 0xFF00, 70000])
def test_micropython_ccm_matches_cryptography(aad_len: int) -> None:
    # AAD of 0xFF00 bytes and more switches to the 6-byte length encoding (RFC 3610 2.2).
    params = [(t, nl, pl, aad_len) for t in (4, 8, 16) for nl in (7, 13) for pl in (0, 1, 16, 31, 300, 1100)]
    lines = mp_lines(MP_CCM_BATCH % (params,))
    assert len(lines) == len(params)
    for line in lines:
        *fields, tag_len = line.split(",")
        key, nonce, pt, aad, out = (bytes.fromhex(x) for x in fields)
        assert len(aad) == aad_len
        assert AESCCM(key, tag_length=int(tag_len)).decrypt(nonce, out, aad) == pt
