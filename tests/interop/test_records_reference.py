"""The federation's signed messages and the query/answer frames against independent
implementations: pycose verifies the COSE_Sign1 signatures, pycddl validates every payload
and plaintext against docs/protocol.cddl, `cryptography` opens the frames from the rules in
PROTOCOL.md alone, and the code reproduces the golden vectors byte for byte."""
from __future__ import annotations

import io
import json
from pathlib import Path

import cbor2
import pycddl
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from pycose.keys import OKPKey
from pycose.messages import Sign1Message

from qis.gateway.records import open_record, open_signed
from qis.gateway.sites import PeerSite, site_kid

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "records.json").read_text())
CDDL = (ROOT / "docs" / "protocol.cddl").read_text()
AAD = bytes.fromhex("8368456e637279707430" "43a1010a" "40")
UPLINK_IV, DOWNLINK_IV = bytes.fromhex("01" + "00" * 12), bytes.fromhex("02" + "00" * 12)


def schema(rule: str) -> pycddl.Schema:
    return pycddl.Schema(f"root = {rule}\n" + CDDL)


def peers() -> dict:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = bytes.fromhex(VECTORS["site"]["public"])
    return {site_kid(public): PeerSite(VECTORS["site"]["name"], Ed25519PublicKey.from_public_bytes(public))}


def pycose_verifies(message: bytes) -> bytes:
    """pycose's view: the signature checks under the site's public key; the payload."""
    msg = Sign1Message.from_cose_obj(cbor2.loads(message), True)
    msg.key = OKPKey(crv="Ed25519", x=bytes.fromhex(VECTORS["site"]["public"]))
    assert msg.verify_signature()
    return msg.payload


def test_the_code_reproduces_the_vectors(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_records", ROOT / "tests" / "vectors" / "make_records.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    monkeypatch.setattr(make, "HERE", tmp_path)
    make.main()
    assert json.loads((tmp_path / "records.json").read_text()) == VECTORS


@pytest.mark.parametrize("vector", VECTORS["records"], ids=lambda v: v["name"])
def test_records_verify_in_pycose_and_match_the_schema(vector):
    message = bytes.fromhex(vector["message"])
    payload = pycose_verifies(message)
    schema("record").validate_cbor(payload)
    record = open_record(message, peers())
    assert [v.hex() if isinstance(v, bytes) else v for v in record.payload()] == vector["payload"]
    tampered = bytearray(message)
    tampered[-1] ^= 1
    msg = Sign1Message.from_cose_obj(cbor2.loads(bytes(tampered)), True)
    msg.key = OKPKey(crv="Ed25519", x=bytes.fromhex(VECTORS["site"]["public"]))
    assert not msg.verify_signature()


def test_ask_reply_and_plan_verify_and_match_the_schema():
    for name in ("ask", "reply", "plan"):
        message = bytes.fromhex(VECTORS[name])
        schema(name).validate_cbor(pycose_verifies(message))
        assert open_signed(message, peers())[1][1] == {"ask": 3, "reply": 4, "plan": 5}[name]


def _plaintext(frame: bytes, key: bytes, iv: bytes) -> bytes:
    protected, unprotected, ciphertext = cbor2.loads(frame)
    piv = unprotected[6]
    nonce = bytes(a ^ b for a, b in zip(bytes(13 - len(piv)) + piv, iv))
    plaintext = AESCCM(key, tag_length=8).decrypt(nonce, ciphertext, AAD)
    stream = io.BytesIO(plaintext)
    cbor2.CBORDecoder(stream).decode()
    assert not any(plaintext[stream.tell():])  # zero padding after the item
    return plaintext[:stream.tell()]


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["profile"])
def test_query_and_answer_frames_open_from_the_protocol_rules(vector):
    key = bytes.fromhex(VECTORS["device"]["key"])
    query, answer = bytes.fromhex(vector["query"]), bytes.fromhex(vector["answer"])
    assert len(query) == {"compact": 51, "full": 512}[vector["profile"]]
    assert len(answer) == {"compact": 51, "full": 128}[vector["profile"]]
    q = _plaintext(query, key, UPLINK_IV)
    schema("query").validate_cbor(q)
    assert cbor2.loads(q)[:6] == [1, 3, 1764201600, 3, 1, 1]
    a = _plaintext(answer, key, DOWNLINK_IV)
    schema("answer").validate_cbor(a)
    assert cbor2.loads(a)[:5] == [1, 5, 0, 31, 3]


def test_pycddl_refuses_what_the_schema_forbids():
    with pytest.raises(pycddl.ValidationError):
        schema("record").validate_cbor(cbor2.dumps([1, 1, b"short", "s", b"p" * 8, 1, 3, 2, 9, 1, bytes(16), 1, None]))
