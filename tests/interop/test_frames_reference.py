"""Cross-implementation checks of the frame layer (edge/frame.py, docs/PROTOCOL.md).

Outcome frames sealed by the edge code under the real MicroPython unix port are checked
against independent oracles: pycose opens them, pycddl validates the frame and the
decrypted plaintext against docs/protocol.cddl, the gateway's own verifier (cbor2 +
cryptography) returns the fields that went in, and CPython running the same edge code
produces the same bytes. ACKs go the other way. The golden vectors are re-derived with
`cryptography` and cbor2 from the rules in PROTOCOL.md alone, and a MicroPython node
that reboots between outcomes never repeats a nonce.
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

import cbor2
import pycddl
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from mp import ROOT, mp_lines, pycose_open
from qis.edge import frame as edge_frame
from qis.edge.ccm import CCM
from qis.gateway.keys import DeviceKey
from qis.gateway.verify import Outcome, Query, open_outcome, open_uplink, seal_ack, seal_answer, seal_multi_ack

# What PROTOCOL.md states, written out here rather than taken from the code under test.
UPLINK_IV = bytes.fromhex("01000000000000000000000000")
DOWNLINK_IV = bytes.fromhex("02000000000000000000000000")
MULTI_ACK_IV = bytes.fromhex("03000000000000000000000000")
AAD = bytes.fromhex("8368456e637279707430" "43a1010a" "40")  # ["Encrypt0", h'a1010a', h'']
PROFILES = {  # name: (frame bytes, ciphertext header, plaintext bytes, fingerprint bytes)
    "compact": (51, bytes.fromhex("581f"), 23, 4),
    "full": (512, bytes.fromhex("5901eb"), 483, 16),
}
ACK = (32, bytes.fromhex("4d"), 5)
ANSWERS = {"compact": (51, bytes.fromhex("581f"), 23), "full": (128, bytes.fromhex("586c"), 100)}  # PROTOCOL.md
U32 = 0xFFFFFFFF

# pycddl 0.6.4 (cddl-rs 0.9.5) panics on any byte-string literal such as h'a1010a'. Where
# the schema still has one, validate the protected header as a 3-byte bstr instead; every
# frame check below also compares the header bytes exactly.
_CDDL = (ROOT / "docs" / "protocol.cddl").read_text()
FRAME_SCHEMA = pycddl.Schema(_CDDL)  # pycddl validates against the first rule: frame
# pycddl 0.6.4 accepts wrong items against the choice `plaintext` whenever outcome-full is
# one of its alternatives (it backtracks badly over ext's `any`), so each plaintext is
# validated against its own rule, chosen by its type and length.
_RULES = {name: pycddl.Schema(f"root = {name}\n" + _CDDL)
          for name in ("outcome-compact", "outcome-full", "ack", "query", "multi-ack", "answer")}


class _PlaintextSchema:
    @staticmethod
    def validate_cbor(encoded: bytes) -> None:
        item = cbor2.loads(encoded)
        kind = item[1] if isinstance(item, list) and len(item) > 1 else None
        rule = {1: "outcome-full" if isinstance(item, list) and len(item) == 10 else "outcome-compact", 2: "ack",
                3: "query", 4: "multi-ack", 5: "answer"}.get(kind, "outcome-compact")
        _RULES[rule].validate_cbor(encoded)


PLAINTEXT_SCHEMA = _PlaintextSchema()


def _split_plaintext(plaintext: bytes) -> tuple[bytes, object]:
    """(encoded item, decoded item) of the one CBOR item at the head; the rest must be zero."""
    stream = io.BytesIO(plaintext)
    item = cbor2.CBORDecoder(stream).decode()
    end = stream.tell()
    assert plaintext[end:] == bytes(len(plaintext) - end), "padding is not all zero"
    return plaintext[:end], item


def _check_frame_shape(message: bytes, kid: bytes, counter: int, size: int, ct_head: bytes) -> None:
    """The byte layout of PROTOCOL.md's frame table, and the CDDL frame rule."""
    assert len(message) == size
    assert message[:6] == bytes.fromhex("8343a1010aa2")
    assert message[6:12] == b"\x04\x44" + kid
    assert message[12:18] == b"\x06\x44" + counter.to_bytes(4, "big")
    assert message[18:18 + len(ct_head)] == ct_head
    FRAME_SCHEMA.validate_cbor(message)


def _expected_item(f: dict) -> list:
    item = [1, 1, f["time"], f["model"], f["domain"], f["label"], f["confidence"], bytes.fromhex(f["fingerprint"])]
    if f["profile"] == "full":
        item += [[list(p) for p in f["topk"]], dict(f["ext"])]
    return item


# --- random outcomes, sealed by MicroPython --------------------------------------------------

def _pick(rng: random.Random, limit: int) -> int:
    """Mostly boundary values of the CBOR integer encodings, sometimes any value."""
    edges = [v for v in (0, 1, 23, 24, 255, 256, 65535, 65536, U32) if v <= limit]
    return rng.choice(edges) if rng.random() < 0.4 else rng.randrange(limit + 1)


def _random_case(rng: random.Random, profile: str, small_ids: bool) -> dict:
    ids = 255 if small_ids else 0xFFFF
    f = {
        "profile": profile,
        "key": rng.randbytes(16).hex(),
        "kid": rng.randbytes(4).hex(),
        "counter": rng.choice((0, U32, rng.randrange(U32 + 1), rng.randrange(256))),
        "time": _pick(rng, U32),
        "model": _pick(rng, ids),
        "domain": _pick(rng, ids),
        "label": _pick(rng, ids),
        "confidence": _pick(rng, 255),
        "fingerprint": rng.randbytes(PROFILES[profile][3]).hex(),
        "topk": [],
        "ext": [],
    }
    if profile == "full":
        f["topk"] = [[_pick(rng, 0xFFFF), _pick(rng, 255)] for _ in range(rng.randrange(6))]
        if rng.random() < 0.2:  # extensions are empty in version 1, but the format has room
            f["ext"] = [[k, _pick(rng, U32)] for k in sorted(rng.sample(range(-30, 30), rng.randrange(1, 4)))]
    return f


def _outcome_cases() -> tuple[list[dict], list[dict]]:
    """(cases that fit their profile, compact cases too large for it), seeded."""
    rng = random.Random(0x51F)
    fits, too_big = [], []
    while len(fits) < 320 or len(too_big) < 20:
        profile = "full" if len(fits) % 2 else "compact"
        case = _random_case(rng, profile, small_ids=rng.random() < 0.5)
        needed = len(cbor2.dumps(_expected_item(case)))
        if needed <= PROFILES[profile][2]:
            if len(fits) < 320:
                fits.append(case)
        elif len(too_big) < 20:
            case["needed"] = needed
            too_big.append(case)
    fits[0]["counter"], fits[1]["counter"] = 0, U32
    fits[2]["counter"], fits[3]["counter"] = U32, 0
    return fits, too_big


MP_SEAL_OUTCOMES = """
import sys, json
from edge import frame, errors
from edge.ccm import CCM
for c in json.loads(sys.stdin.read()):
    prof = frame.profile(c["profile"])
    ext = {}
    for k, v in c["ext"]:
        ext[k] = v
    try:
        pt = frame.encode_outcome(prof, c["time"], c["model"], c["domain"], c["label"], c["confidence"],
                                  bytes.fromhex(c["fingerprint"]), c["topk"], ext)
        sealed = frame.seal(CCM(bytes.fromhex(c["key"])), bytes.fromhex(c["kid"]), c["counter"], pt, frame.UPLINK_IV)
        print(sealed.hex())
    except errors.QisError as exc:
        print("%s: %s" % (type(exc).__name__, exc))
"""


@pytest.fixture(scope="module")
def sealed_outcomes() -> tuple[list[dict], list[str]]:
    """Every random case sealed by one MicroPython process: (cases, output lines)."""
    fits, too_big = _outcome_cases()
    cases = fits + too_big
    lines = mp_lines(MP_SEAL_OUTCOMES, json.dumps(cases).encode())
    assert len(lines) == len(cases)
    return cases, lines


def test_random_cases_cover_both_profiles_and_the_edges(sealed_outcomes) -> None:
    cases, _ = sealed_outcomes
    fits = [c for c in cases if "needed" not in c]
    for profile in PROFILES:
        mine = [c for c in fits if c["profile"] == profile]
        assert len(mine) == 160
        assert {0, U32} <= {c["counter"] for c in mine}
        assert {0, U32} <= {c["time"] for c in mine}
        assert {0, 255} <= {c["confidence"] for c in mine}
    full = [c for c in fits if c["profile"] == "full"]
    assert {len(c["topk"]) for c in full} == set(range(6))
    assert any(c["ext"] for c in full)
    assert any(max(c["model"], c["domain"], c["label"]) > 255 for c in fits if c["profile"] == "compact")


def test_micropython_outcome_frames_against_every_oracle(sealed_outcomes) -> None:
    cases, lines = sealed_outcomes
    checked = 0
    for case, line in zip(cases, lines):
        if "needed" in case:
            continue
        size, ct_head, pt_len, _ = PROFILES[case["profile"]]
        key, kid, counter = bytes.fromhex(case["key"]), bytes.fromhex(case["kid"]), case["counter"]
        message = bytes.fromhex(line)
        _check_frame_shape(message, kid, counter, size, ct_head)

        plaintext = pycose_open(message, key, UPLINK_IV).decrypt()
        assert len(plaintext) == pt_len
        encoded, item = _split_plaintext(plaintext)
        PLAINTEXT_SCHEMA.validate_cbor(encoded)
        assert item == _expected_item(case)

        device = DeviceKey("dev-%d" % checked, kid, key)
        got = open_outcome(message, {kid: device})
        assert got == Outcome(device.device, kid, counter, case["profile"], case["time"], case["model"],
                              case["domain"], case["label"], case["confidence"], bytes.fromhex(case["fingerprint"]),
                              [list(p) for p in case["topk"]], dict(case["ext"]))

        prof = edge_frame.profile(case["profile"])
        cpython_pt = edge_frame.encode_outcome(prof, case["time"], case["model"], case["domain"], case["label"],
                                               case["confidence"], bytes.fromhex(case["fingerprint"]), case["topk"],
                                               dict(case["ext"]))
        assert edge_frame.seal(CCM(key), kid, counter, cpython_pt, edge_frame.UPLINK_IV) == message
        checked += 1
    assert checked == 320


def test_micropython_refuses_compact_outcomes_that_do_not_fit(sealed_outcomes) -> None:
    cases, lines = sealed_outcomes
    refused = [(c, line) for c, line in zip(cases, lines) if "needed" in c]
    assert len(refused) == 20
    for case, line in refused:
        assert line == "EncodeError: outcome needs %d plaintext bytes, its frame holds 23" % case["needed"]


def test_pycddl_is_a_working_oracle() -> None:
    # The schema checks must be able to fail, or passing them means nothing.
    good = [1, 1, 0, 0, 0, 0, 0, bytes(4)]
    PLAINTEXT_SCHEMA.validate_cbor(cbor2.dumps(good))
    for bad in ([2] + good[1:], good[:2] + [U32 + 1] + good[3:], good[:3] + [65536] + good[4:],
                good[:6] + [256, bytes(4)], good[:7] + [bytes(5)], good + [[], {}], [1, 3]):
        with pytest.raises(pycddl.ValidationError):
            PLAINTEXT_SCHEMA.validate_cbor(cbor2.dumps(bad))
    with pytest.raises(pycddl.ValidationError):
        FRAME_SCHEMA.validate_cbor(cbor2.dumps([b"\xa1\x01\x0a", {4: bytes(3), 6: bytes(4)}, bytes(9)]))
    with pytest.raises(pycddl.ValidationError):
        FRAME_SCHEMA.validate_cbor(cbor2.dumps([b"\xa1\x01\x0a", {4: bytes(4)}, bytes(9)]))
    FRAME_SCHEMA.validate_cbor(cbor2.dumps([b"\xa1\x01\x0a", {4: bytes(4), 6: bytes(8)}, bytes(11)]))
    with pytest.raises(pycddl.ValidationError):  # a partial IV neither a counter nor a multi-ACK's
        FRAME_SCHEMA.validate_cbor(cbor2.dumps([b"\xa1\x01\x0a", {4: bytes(4), 6: bytes(6)}, bytes(11)]))
    with pytest.raises(pycddl.ValidationError):
        PLAINTEXT_SCHEMA.validate_cbor(cbor2.dumps([1, 4, 0]))


# --- ACKs: sealed by the gateway, opened and re-sealed by MicroPython ------------------------

MP_ACKS = """
import sys, json
from edge import frame, errors
from edge.ccm import CCM
for c in json.loads(sys.stdin.read()):
    ccm = CCM(bytes.fromhex(c["key"]))
    kid, ack = bytes.fromhex(c["kid"]), bytes.fromhex(c["ack"])
    counter = frame.open_ack(ccm, kid, ack)
    errs = []
    forged = bytearray(ack)
    forged[c["flip"]] ^= 1
    for k, data in ((bytes(4), ack), (kid, forged)):
        try:
            frame.open_ack(ccm, k, data)
            errs.append("accepted")
        except errors.QisError as exc:
            errs.append(type(exc).__name__)
    print("%d %s %s" % (counter, frame.seal_ack(ccm, kid, counter).hex(), ",".join(errs)))
"""


def test_gateway_acks_open_under_micropython_and_match_its_own() -> None:
    rng = random.Random(0xACC)
    counters = [0, U32, 1, 23, 24, 255, 256, 65535, 65536] + [rng.randrange(U32 + 1) for _ in range(51)]
    cases = []
    for counter in counters:
        kid = rng.randbytes(4)
        while kid == bytes(4):
            kid = rng.randbytes(4)
        device = DeviceKey("dev", kid, rng.randbytes(16))
        ack = seal_ack(device, counter)
        cases.append((device, counter, ack))
    payload = [{"key": d.key.hex(), "kid": d.kid.hex(), "ack": a.hex(), "flip": 19 + rng.randrange(13)}
               for d, _, a in cases]
    lines = mp_lines(MP_ACKS, json.dumps(payload).encode())
    assert len(lines) == len(cases)
    for (device, counter, ack), line in zip(cases, lines):
        got_counter, mp_ack, errs = line.split()
        assert int(got_counter) == counter
        assert bytes.fromhex(mp_ack) == ack  # both sides seal the identical bytes
        assert errs == "FrameError,AuthError"  # another device's kid; a flipped ciphertext bit
        _check_frame_shape(ack, device.kid, counter, *ACK[:2])
        plaintext = pycose_open(ack, device.key, DOWNLINK_IV).decrypt()
        assert plaintext == bytes.fromhex("8201020000")
        encoded, item = _split_plaintext(plaintext)
        PLAINTEXT_SCHEMA.validate_cbor(encoded)
        assert item == [1, 2]
        with pytest.raises(InvalidTag):  # the uplink nonce space does not open an ACK
            pycose_open(ack, device.key, UPLINK_IV).decrypt()


# --- golden vectors, re-derived from PROTOCOL.md with cryptography and cbor2 -----------------

VECTORS = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())


def _reference_decrypt(message: bytes, key: bytes, base_iv: bytes, ct_head: bytes) -> bytes:
    piv = message[14:18]
    nonce = bytes(a ^ b for a, b in zip(bytes(9) + piv, base_iv))
    return AESCCM(key, tag_length=8).decrypt(nonce, message[18 + len(ct_head):], AAD)


@pytest.mark.parametrize("vector", VECTORS["outcomes"], ids=lambda v: v["name"])
def test_golden_outcome_vector(vector: dict) -> None:
    key, kid = bytes.fromhex(VECTORS["key"]), bytes.fromhex(VECTORS["kid"])
    size, ct_head, pt_len, fp_len = PROFILES[vector["profile"]]
    message = bytes.fromhex(vector["frame"])
    _check_frame_shape(message, kid, vector["counter"], size, ct_head)
    plaintext = _reference_decrypt(message, key, UPLINK_IV, ct_head)
    assert plaintext.hex() == vector["plaintext"] and len(plaintext) == pt_len
    encoded, item = _split_plaintext(plaintext)
    PLAINTEXT_SCHEMA.validate_cbor(encoded)
    f = vector["fields"]
    assert len(bytes.fromhex(f["fingerprint"])) == fp_len
    assert item == _expected_item(dict(f, profile=vector["profile"], ext=[]))
    with pytest.raises(InvalidTag):
        _reference_decrypt(message, key, DOWNLINK_IV, ct_head)


@pytest.mark.parametrize("vector", VECTORS["acks"], ids=lambda v: "ack %d" % v["counter"])
def test_golden_ack_vector(vector: dict) -> None:
    key, kid = bytes.fromhex(VECTORS["key"]), bytes.fromhex(VECTORS["kid"])
    message = bytes.fromhex(vector["frame"])
    _check_frame_shape(message, kid, vector["counter"], *ACK[:2])
    plaintext = _reference_decrypt(message, key, DOWNLINK_IV, ACK[1])
    assert plaintext == bytes.fromhex("8201020000")
    assert cbor2.loads(plaintext[:3]) == [1, 2]


@pytest.mark.parametrize("vector", VECTORS["multi_acks"], ids=lambda v: "multi-ack %s" % v["counters"][:3])
def test_golden_multi_ack_vector(vector: dict) -> None:
    # Re-derived from PROTOCOL.md: 22-byte header with an 8-byte partial IV (highest counter,
    # then the bitmap of the 32 below, MSB first), ciphertext header 4b, plaintext [1, 4].
    key, kid = bytes.fromhex(VECTORS["key"]), bytes.fromhex(VECTORS["kid"])
    message = bytes.fromhex(vector["frame"])
    counters = vector["counters"]
    top = counters[0]
    bits = sum(1 << (32 - (top - c)) for c in counters[1:])
    piv = top.to_bytes(4, "big") + bits.to_bytes(4, "big")
    assert len(message) == 34
    assert message[:18] == bytes.fromhex("8343a1010aa20444") + kid + bytes.fromhex("0648") + piv[:4]
    assert message[18:23] == piv[4:] + b"\x4b"
    FRAME_SCHEMA.validate_cbor(message)
    nonce = bytes(a ^ b for a, b in zip(bytes(5) + piv, MULTI_ACK_IV))
    plaintext = AESCCM(key, tag_length=8).decrypt(nonce, message[23:], AAD)
    assert plaintext == bytes.fromhex("820104")
    PLAINTEXT_SCHEMA.validate_cbor(plaintext)
    assert cbor2.loads(plaintext) == [1, 4]
    assert pycose_open(message, key, MULTI_ACK_IV).decrypt() == plaintext
    device = DeviceKey("dev", kid, key)
    assert seal_multi_ack(device, counters) == message  # the gateway's own sealer agrees


@pytest.mark.parametrize("vector", VECTORS["queries"], ids=lambda v: v["name"])
def test_golden_query_vector(vector: dict) -> None:
    key, kid = bytes.fromhex(VECTORS["key"]), bytes.fromhex(VECTORS["kid"])
    size, ct_head, pt_len, fp_len = PROFILES[vector["profile"]]
    message = bytes.fromhex(vector["frame"])
    _check_frame_shape(message, kid, vector["counter"], size, ct_head)  # an outcome's size: told apart by type
    plaintext = _reference_decrypt(message, key, UPLINK_IV, ct_head)
    assert plaintext.hex() == vector["plaintext"] and len(plaintext) == pt_len
    encoded, item = _split_plaintext(plaintext)
    PLAINTEXT_SCHEMA.validate_cbor(encoded)
    f = vector["fields"]
    assert item == [1, 3, f["time"], f["model"], f["domain"], f["probe"], bytes.fromhex(f["fingerprint"])]
    assert len(item[6]) == fp_len
    device = DeviceKey("dev", kid, key)
    assert open_uplink(message, {kid: device}, 0) == Query("dev", kid, vector["counter"], vector["profile"],
                                                            f["time"], f["model"], f["domain"], f["probe"],
                                                            bytes.fromhex(f["fingerprint"]))


@pytest.mark.parametrize("vector", VECTORS["answers"], ids=lambda v: v["name"])
def test_golden_answer_vector(vector: dict) -> None:
    key, kid = bytes.fromhex(VECTORS["key"]), bytes.fromhex(VECTORS["kid"])
    size, ct_head, pt_len = ANSWERS[vector["profile"]]
    message = bytes.fromhex(vector["frame"])
    _check_frame_shape(message, kid, vector["counter"], size, ct_head)
    plaintext = _reference_decrypt(message, key, DOWNLINK_IV, ct_head)
    assert plaintext.hex() == vector["plaintext"] and len(plaintext) == pt_len
    encoded, item = _split_plaintext(plaintext)
    PLAINTEXT_SCHEMA.validate_cbor(encoded)
    f = vector["fields"]
    capped = (lambda n: min(n, 255)) if vector["profile"] == "compact" else (lambda n: n)
    assert item == [1, 5, f["status"], capped(f["outcomes"]), capped(f["sites"]), f["labels"],
                    [capped(f["confirmed"][0]), f["confirmed"][1]], f["models"]]
    assert pycose_open(message, key, DOWNLINK_IV).decrypt() == plaintext
    device = DeviceKey("dev", kid, key)
    assert seal_answer(device, vector["counter"], edge_frame.profile(vector["profile"]), f["status"], f["outcomes"],
                       f["sites"], f["labels"], f["confirmed"], f["models"]) == message  # the gateway's sealer agrees


def test_golden_vectors_cover_both_profiles_and_counter_edges() -> None:
    assert {v["profile"] for v in VECTORS["outcomes"]} == set(PROFILES)
    assert {0, U32} <= {v["counter"] for v in VECTORS["outcomes"]}
    assert {0, U32} <= {v["counter"] for v in VECTORS["acks"]}
    assert {0, U32} <= {c for v in VECTORS["multi_acks"] for c in v["counters"]}
    assert max(len(v["counters"]) for v in VECTORS["multi_acks"]) == 33
    assert {v["profile"] for v in VECTORS["queries"]} == {v["profile"] for v in VECTORS["answers"]} == set(PROFILES)
    assert {0, 1} == {v["fields"]["probe"] for v in VECTORS["queries"]}


# --- nonce uniqueness across reboots of one MicroPython node ---------------------------------

MP_NODE = """
from edge import frame, store
from edge.ccm import CCM
from edge.node import Node
d = %(dir)r
key, kid = bytes.fromhex(%(key)r), bytes.fromhex(%(kid)r)
seq = 0
for boot in range(%(boots)d):
    ccm, box = CCM(key), store.Outbox(d)
    node = Node(ccm, kid, store.Counter(d, block=16), box, frame.COMPACT, window_bytes=4 * 51, outbox_limit=128)
    for c in box.pending():
        print("pending %%d %%d %%s" %% (boot, c, box.get(c).hex()))
    now = 0
    for i in range(%(per_boot)d):
        c = node.conclude(1700000000 + seq, 1, 1, seq %% 5, seq %% 256, bytes((seq & 255, boot, 7, 9)))
        print("sealed %%d %%d %%s" %% (boot, c, box.get(c).hex()))
        seq += 1
        for sent in node.poll(now):
            print("sent %%d %%s" %% (boot, sent.hex()))
        if seq %% 3 == 0:  # the gateway acknowledges two outcomes of every three
            continue
        print("ack %%d %%s %%d" %% ((boot,) + node.receive(frame.seal_ack(ccm, kid, c), now)))
        now += 50
"""


def test_node_never_repeats_a_nonce_across_reboots(tmp_path: Path) -> None:
    rng = random.Random(0x1107)
    key, kid = rng.randbytes(16), rng.randbytes(4)
    boots, per_boot = 6, 17  # 102 outcomes, 5 reboots in between
    lines = mp_lines(MP_NODE % {"dir": str(tmp_path), "key": key.hex(), "kid": kid.hex(),
                                 "boots": boots, "per_boot": per_boot})
    sealed: list[tuple[int, int, bytes]] = []
    pending: dict[int, list[tuple[int, bytes]]] = {}
    sent: list[tuple[int, bytes]] = []
    acked: set[int] = set()
    for line in lines:
        kind, *rest = line.split()
        if kind == "sealed":
            sealed.append((int(rest[0]), int(rest[1]), bytes.fromhex(rest[2])))
        elif kind == "pending":
            pending.setdefault(int(rest[0]), []).append((int(rest[1]), bytes.fromhex(rest[2])))
        elif kind == "sent":
            sent.append((int(rest[0]), bytes.fromhex(rest[1])))
        else:
            assert kind == "ack" and rest[1] == "acked", line
            acked.add(int(rest[2]))
    assert len(sealed) == boots * per_boot
    assert str(tmp_path).startswith("/tmp/")

    device = DeviceKey("node", kid, key)
    counters, nonces = [], set()
    by_counter = {}
    for _, counter, message in sealed:
        got = open_outcome(message, {kid: device})
        assert got.counter == counter and len(message) == 51
        piv = cbor2.loads(message)[1][6]
        nonces.add(bytes(a ^ b for a, b in zip(bytes(9) + piv, UPLINK_IV)))
        counters.append(counter)
        by_counter[counter] = message
    assert len(set(counters)) == len(counters) == len(nonces)
    assert counters == sorted(counters)  # monotonic through every reboot
    # Each reboot resumes at the next reserved block (of 16), skipping what was left of it.
    firsts = [c for (boot, c, _), prev in zip(sealed, [None] + sealed) if prev is None or prev[0] != boot]
    assert firsts == [0, 32, 64, 96, 128, 160]
    # After each reboot the outbox holds exactly the unacknowledged frames, byte for byte.
    for boot in range(1, boots):
        before = {c for b, c, _ in sealed if b < boot} - acked
        assert sorted(c for c, _ in pending.get(boot, [])) == sorted(before)
        assert all(by_counter[c] == m for c, m in pending.get(boot, []))
    # Every transmission is a sealed frame, unchanged; after each reboot the frames sealed
    # before it are sent again, as the same bytes.
    assert {m for _, m in sent} <= set(by_counter.values())
    for boot in range(1, boots):
        earlier = {m for b, _, m in sealed if b < boot}
        assert any(m in earlier for b, m in sent if b == boot)
