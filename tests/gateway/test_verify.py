"""verify.open_outcome and verify.seal_ack against frames made by the edge code.

Every refusal is checked by its reason text and by `authenticated`, which must be True
exactly for the frames whose AES-CCM tag verified under the registered device key.
"""
from __future__ import annotations

import os

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qis.edge import frame as spec
from qis.edge.ccm import CCM
from qis.edge.errors import AuthError, FrameError
from qis.gateway.verify import PROTECTED, Rejected, open_outcome, seal_ack, seal_answer


def rejected(data: bytes, registry: dict) -> Rejected:
    with pytest.raises(Rejected) as info:
        open_outcome(data, registry)
    return info.value


def refused_inside(data: bytes, registry: dict, device: str, counter: int) -> str:
    """The reason for a frame that authenticated but broke a rule (device/counter are known)."""
    r = rejected(data, registry)
    assert r.authenticated is True
    assert (r.device, r.counter) == (device, counter)
    return r.reason


def assert_layout_break(data: bytes, registry: dict, offset: int) -> None:
    """The frame is refused before any key is used, naming the first byte off the fixed layout."""
    r = rejected(data, registry)
    assert (r.authenticated, r.code, r.counter) == (False, "envelope", None)
    assert r.reason.startswith("byte %d breaks the fixed COSE_Encrypt0 layout of a " % offset), r.reason


def refused_outside(data: bytes, registry: dict) -> str:
    """The reason for a frame that never passed the tag check."""
    r = rejected(data, registry)
    assert r.authenticated is False
    assert r.counter is None
    return r.reason


# --- valid frames -------------------------------------------------------------------


def test_compact_round_trip(registry, frames, devices):
    data = frames.compact("dev-a", 7, label=4, confidence=201)
    assert len(data) == 51
    o = open_outcome(data, registry)
    assert (o.device, o.kid, o.counter, o.profile) == ("dev-a", devices["dev-a"].kid, 7, "compact")
    assert (o.time, o.model, o.domain, o.label, o.confidence) == (frames.TIME, 2, 1, 4, 201)
    assert o.fingerprint == frames.COMPACT_FP
    assert (o.topk, o.ext) == ([], {})


def test_full_round_trip(registry, frames, devices):
    data = frames.full("dev-b", 0xFFFFFFFF, label=2, confidence=0, time=0xFFFFFFFF)
    assert len(data) == 512
    o = open_outcome(data, registry)
    assert (o.device, o.kid, o.counter, o.profile) == ("dev-b", devices["dev-b"].kid, 0xFFFFFFFF, "full")
    assert (o.time, o.model, o.domain, o.label, o.confidence) == (0xFFFFFFFF, 3, 1, 2, 0)
    assert o.fingerprint == frames.FULL_FP
    assert o.topk == frames.TOPK
    assert o.ext == {}


def test_full_with_extension_map_is_accepted(registry, frames):
    fields = frames.full_fields()
    fields[9] = {1: 5, -2: b"x"}
    o = open_outcome(frames.sealed_fields("dev-a", 3, fields, spec.FULL), registry)
    assert o.ext == {1: 5, -2: b"x"}


# --- size ---------------------------------------------------------------------------


def test_every_truncation_of_a_compact_frame(registry, frames):
    data = frames.compact("dev-a", 1)
    for n in range(len(data)):
        assert refused_outside(data[:n], registry) == (
            "size %d bytes matches no profile (compact 51, full 512)" % n)


def test_full_frame_minus_one_byte(registry, frames):
    data = frames.full("dev-a", 1)
    assert refused_outside(data[:-1], registry).startswith("size 511 bytes matches no profile")


@pytest.mark.parametrize("size", [513, 1000])
def test_oversized(registry, frames, size):
    data = frames.full("dev-a", 1)
    data += os.urandom(size - len(data))
    assert refused_outside(data, registry).startswith("size %d bytes matches no profile" % size)


# --- hostile bytes (hypothesis) -----------------------------------------------------


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(min_size=51, max_size=51), st.binary(min_size=512, max_size=512),
                      st.binary(min_size=32, max_size=32), st.binary(max_size=600)))
def test_random_bytes_only_raise_rejected(registry, data):
    # Anything but Rejected (or an accepted frame) fails the test with its own traceback.
    r = rejected(data, registry)
    assert r.reason and r.authenticated is False


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(full=st.booleans(), edits=st.lists(st.tuples(st.integers(0, 511), st.integers(1, 255)), min_size=1, max_size=6))
def test_mutated_frames_only_raise_rejected(registry, frames, full, edits):
    """A valid frame with bytes changed (header, kid, piv, ciphertext or tag) is always refused."""
    data = bytearray(frames.full("dev-a", 9) if full else frames.compact("dev-a", 9))
    for pos, xor in edits:
        data[pos % len(data)] ^= xor
    if bytes(data) == (frames.full("dev-a", 9) if full else frames.compact("dev-a", 9)):
        return  # two edits cancelled out
    assert rejected(bytes(data), registry).authenticated is False


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(min_size=1, max_size=23))
def test_random_authenticated_plaintexts_only_raise_rejected(registry, frames, body):
    """Whatever the plaintext holds, once the tag verifies the answer is a Rejected that
    names the device and counter (or a valid outcome, if the bytes happen to be one)."""
    data = frames.sealed_body("dev-b", 5, body + bytes(23 - len(body)))
    try:
        o = open_outcome(data, registry)
    except Rejected as r:
        assert r.authenticated is True and (r.device, r.counter) == ("dev-b", 5) and r.reason
    else:
        assert (o.device, o.counter) == ("dev-b", 5)


# --- outer structure (before the tag) ----------------------------------------------


def test_outer_not_an_array(registry):
    data = cbor2.dumps(bytes(49))  # a 51-byte byte string
    assert len(data) == 51
    assert_layout_break(data, registry, 0)


def test_outer_array_of_four(registry, devices):
    data = cbor2.dumps([PROTECTED, {4: devices["dev-a"].kid, 6: bytes(4)}, bytes(30), 0])
    assert len(data) == 51
    assert_layout_break(data, registry, 0)


def test_outer_not_cbor(registry):
    assert_layout_break(b"\xff" * 51, registry, 0)


def test_other_algorithm_in_protected_header(registry, frames, devices):
    ct = cbor2.loads(frames.compact("dev-a", 1))[2]
    data = frames.outer(b"\xa1\x01\x0b", {4: devices["dev-a"].kid, 6: bytes(4)}, ct)  # alg 11
    assert_layout_break(data, registry, 4)


def test_protected_header_as_map_not_bstr(registry, devices):
    data = frames_outer = cbor2.dumps([{1: 10}, {4: devices["dev-a"].kid, 6: bytes(4)}, bytes(32)])
    assert len(frames_outer) == 51
    assert_layout_break(data, registry, 1)


@pytest.mark.parametrize("unprotected", [
    {4: b"KIDx", 6: bytes(4), 5: bytes(1)},  # an extra label (5: IV)
    {4: b"KIDx"},                            # no partial IV
    {6: bytes(4)},                           # no kid
    {},
    [4, 6],                                  # not a map
])
def test_header_labels(registry, frames, unprotected):
    ct = cbor2.loads(frames.compact("dev-a", 1))[2]
    data = frames.outer(PROTECTED, unprotected, ct)
    assert_layout_break(data, registry, 5)


@pytest.mark.parametrize("kid_len, piv_len", [(3, 4), (5, 4), (4, 3), (4, 5), (0, 4), (4, 0)])
def test_kid_or_piv_of_wrong_length(registry, frames, devices, kid_len, piv_len):
    ct = cbor2.loads(frames.compact("dev-a", 1))[2]
    kid = (devices["dev-a"].kid * 2)[:kid_len]
    data = frames.outer(PROTECTED, {4: kid, 6: bytes(piv_len)}, ct)
    assert_layout_break(data, registry, 7 if kid_len != 4 else 13)


def test_kid_as_text(registry, frames):
    ct = cbor2.loads(frames.compact("dev-a", 1))[2]
    data = frames.outer(PROTECTED, {4: "abcd", 6: bytes(4)}, ct)
    assert_layout_break(data, registry, 7)


def test_ciphertext_as_text(registry, devices):
    data = frames_outer = cbor2.dumps([PROTECTED, {4: devices["dev-a"].kid, 6: bytes(4)}, "x" * 31])
    assert len(frames_outer) == 51
    assert_layout_break(data, registry, 18)


def test_ciphertext_header_in_longer_form(registry, frames):
    data = frames.compact("dev-a", 1)
    assert data[18:20] == b"\x58\x1f"
    # 59 00 1e + 30 ciphertext bytes: same total size, a valid but non-shortest bstr head.
    longer = data[:18] + b"\x59\x00\x1e" + data[20:50]
    assert len(longer) == 51 and cbor2.loads(longer)[2] == data[20:50]
    assert_layout_break(longer, registry, 18)


def test_kid_header_in_longer_form(registry, frames):
    data = frames.compact("dev-a", 1)
    assert data[6:8] == b"\x04\x44"
    longer = data[:7] + b"\x58\x04" + data[8:18] + b"\x58\x1e" + data[20:50]
    assert len(longer) == 51
    assert_layout_break(longer, registry, 7)


def test_header_map_in_wrong_key_order(registry, frames):
    data = frames.compact("dev-a", 1)
    swapped = data[:6] + data[12:18] + data[6:12] + data[18:]  # {6: piv, 4: kid}
    assert cbor2.loads(swapped)[1] == cbor2.loads(data)[1]
    assert_layout_break(swapped, registry, 6)


def test_trailing_bytes_after_the_structure(registry, frames):
    data = frames.compact("dev-a", 1)
    shorter = data[:18] + b"\x58\x1e" + data[20:50] + b"\x00"  # one byte after the array
    assert_layout_break(shorter, registry, 19)


# --- keys and the tag ---------------------------------------------------------------


def test_unknown_key_id(registry, frames, stranger):
    data = frames.seal(stranger.key, stranger.kid, 1, frames.compact_plaintext())
    r = rejected(data, registry)
    assert r.reason == "unknown key id %s" % stranger.kid.hex()
    assert (r.authenticated, r.device) == (False, None)


def test_wrong_key_with_a_registered_kid(registry, frames, devices):
    data = frames.seal(os.urandom(16), devices["dev-a"].kid, 1, frames.compact_plaintext())
    r = rejected(data, registry)
    assert r.reason == "authentication failed for device dev-a: wrong key, forged or corrupted frame"
    assert (r.authenticated, r.device, r.counter) == (False, "dev-a", None)


@pytest.mark.parametrize("make", ["compact", "full"])
def test_every_flipped_bit_in_ciphertext_and_tag(registry, frames, make):
    data = getattr(frames, make)("dev-a", 1)
    start = 20 if make == "compact" else 21  # after the ciphertext bstr head
    positions = range(start, len(data)) if make == "compact" else list(range(start, start + 16)) + list(range(496, 512))
    for pos in positions:
        for bit in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            assert refused_outside(bytes(bad), registry).startswith("authentication failed for device dev-a")


def test_flipped_bit_in_partial_iv(registry, frames):
    data = bytearray(frames.compact("dev-a", 1))
    data[17] ^= 0x02  # counter 1 -> 3: another nonce
    assert refused_outside(bytes(data), registry).startswith("authentication failed for device dev-a")


def test_kid_swapped_to_another_registered_device(registry, frames, devices):
    data = frames.compact("dev-a", 1)
    swapped = data[:8] + devices["dev-b"].kid + data[12:]
    r = rejected(swapped, registry)
    assert r.reason.startswith("authentication failed for device dev-b")
    assert r.authenticated is False


# --- authenticated, wrong inside ----------------------------------------------------


def test_wrong_version(registry, frames):
    fields = frames.compact_fields()
    fields[0] = 2
    reason = refused_inside(frames.sealed_fields("dev-a", 11, fields), registry, "dev-a", 11)
    assert reason == "unsupported version 2 (this gateway speaks version 1)"


def test_version_as_text(registry, frames):
    fields = frames.compact_fields()
    fields[0] = "1"
    assert refused_inside(frames.sealed_fields("dev-a", 11, fields), registry, "dev-a", 11).startswith(
        "unsupported version a str")


def test_wrong_type(registry, frames):
    fields = frames.compact_fields()
    fields[1] = 2
    reason = refused_inside(frames.sealed_fields("dev-a", 12, fields), registry, "dev-a", 12)
    assert reason == "unexpected frame type 2 (want outcome, 1 or query, 3)"


def test_ack_plaintext_sealed_as_uplink(registry, frames):
    data = frames.sealed_body("dev-a", 12, b"\x82\x01\x02")
    assert refused_inside(data, registry, "dev-a", 12) == "unexpected frame type 2 (want outcome, 1 or query, 3)"


def test_compact_with_too_many_fields(registry, frames):
    fields = frames.compact_fields() + [[]]
    reason = refused_inside(frames.sealed_fields("dev-a", 13, fields), registry, "dev-a", 13)
    assert reason == "compact outcome must have 8 fields, got 9"


def test_compact_with_too_few_fields(registry, frames):
    reason = refused_inside(frames.sealed_fields("dev-a", 13, frames.compact_fields()[:7]), registry, "dev-a", 13)
    assert reason == "compact outcome must have 8 fields, got 7"


def test_full_without_topk_and_ext(registry, frames):
    fields = frames.full_fields()[:8]
    reason = refused_inside(frames.sealed_fields("dev-a", 14, fields, spec.FULL), registry, "dev-a", 14)
    assert reason == "full outcome must have 10 fields, got 8"


@pytest.mark.parametrize("index, value, reason", [
    (6, 256, "confidence must be an integer in 0..255, got 256"),
    (6, -1, "confidence must be an integer in 0..255, got -1"),
    (6, True, "confidence must be an integer in 0..255, got a bool"),
    (2, 2**32, "time must be an integer in 0..4294967295, got 4294967296"),
    (3, 65536, "model must be an integer in 0..65535, got 65536"),
    (4, "ecg", "domain must be an integer in 0..65535, got a str"),
    (5, None, "label must be an integer in 0..65535, got a NoneType"),
    (7, b"abc", "fingerprint must be 4 bytes"),
    (7, b"abcde", "fingerprint must be 4 bytes"),
    (7, "abcd", "fingerprint must be 4 bytes"),
])
def test_compact_bad_field(registry, frames, index, value, reason):
    fields = frames.compact_fields()
    fields[index] = value
    assert refused_inside(frames.sealed_fields("dev-b", 15, fields), registry, "dev-b", 15) == reason


@pytest.mark.parametrize("index, value, reason", [
    (7, bytes(4), "fingerprint must be 16 bytes"),
    (8, [[1, 2]] * 6, "top-k must be a list of at most 5 pairs"),
    (8, {1: 2}, "top-k must be a list of at most 5 pairs"),
    (8, [[1]], "top-k entries must be [label, score] pairs"),
    (8, [[1, 2, 3]], "top-k entries must be [label, score] pairs"),
    (8, [5], "top-k entries must be [label, score] pairs"),
    (8, [[1, 256]], "top-k score must be an integer in 0..255, got 256"),
    (8, [[65536, 1]], "top-k label must be an integer in 0..65535, got 65536"),
    (8, [[1, b"x"]], "top-k score must be an integer in 0..255, got a bytes"),
    (9, {"a": 1}, "extensions must be a map with integer keys"),
    (9, {1: 1, b"k": 2}, "extensions must be a map with integer keys"),
    (9, [], "extensions must be a map with integer keys"),
])
def test_full_bad_field(registry, frames, index, value, reason):
    fields = frames.full_fields()
    fields[index] = value
    assert refused_inside(frames.sealed_fields("dev-b", 16, fields, spec.FULL), registry, "dev-b", 16) == reason


def test_extension_with_bool_key_is_outside_the_protocol(registry, frames):
    fields = frames.full_fields()
    fields[9] = {True: 1}
    reason = refused_inside(frames.sealed_fields("dev-b", 16, fields, spec.FULL), registry, "dev-b", 16)
    assert reason == "plaintext is not deterministic CBOR of the schema: cbor: unsupported map key type bool at offset 43"


@pytest.mark.parametrize("pos", [0, 10, 22])
def test_non_zero_padding(registry, frames, pos):
    body = cbor2.dumps(frames.compact_fields(), canonical=True)
    padding = bytearray(23 - len(body))
    padding[min(pos, len(padding) - 1)] = 1
    reason = refused_inside(frames.sealed_body("dev-a", 17, body, padding=bytes(padding)), registry, "dev-a", 17)
    assert reason == "padding after the plaintext is not all zero"


def test_non_canonical_int_in_plaintext(registry, frames):
    body = cbor2.dumps(frames.compact_fields(), canonical=True)
    assert body[:2] == b"\x88\x01"
    longer = b"\x88\x18\x01" + body[2:]  # version 1 as a one-byte argument
    assert cbor2.loads(longer) == frames.compact_fields()
    assert refused_inside(frames.sealed_body("dev-a", 18, longer), registry, "dev-a", 18) == (
        "plaintext is not deterministic CBOR of the schema: cbor: non-shortest unsigned int head "
        "(additional info 24 for 1) at offset 1")


def test_indefinite_length_array_in_plaintext(registry, frames):
    body = cbor2.dumps(frames.compact_fields(), canonical=True)
    indefinite = b"\x9f" + body[1:] + b"\xff"
    assert cbor2.loads(indefinite) == frames.compact_fields()
    assert refused_inside(frames.sealed_body("dev-a", 18, indefinite), registry, "dev-a", 18) == (
        "plaintext is not deterministic CBOR of the schema: cbor: indefinite length array is not supported "
        "at offset 0")


def test_float_in_plaintext(registry, frames):
    fields = frames.compact_fields()
    fields[6] = 200.0
    reason = refused_inside(frames.sealed_fields("dev-a", 19, fields), registry, "dev-a", 19)
    assert reason == ("plaintext is not deterministic CBOR of the schema: cbor: floats are not supported "
                      "(initial byte 0xf9) at offset 11")


def test_plaintext_not_an_array(registry, frames):
    reason = refused_inside(frames.sealed_fields("dev-a", 20, {1: 1}), registry, "dev-a", 20)
    assert reason == "plaintext is not an array [version, type, ...]"


def test_plaintext_not_cbor(registry, frames):
    reason = refused_inside(frames.sealed_body("dev-a", 21, b"\x5f"), registry, "dev-a", 21)  # open-ended bstr
    assert reason.startswith("plaintext is not deterministic CBOR of the schema: cbor: indefinite length")


def test_all_zero_plaintext(registry, frames):
    reason = refused_inside(frames.sealed_body("dev-a", 22, b""), registry, "dev-a", 22)
    assert reason == "plaintext is not an array [version, type, ...]"


# --- ACKs ---------------------------------------------------------------------------


@pytest.mark.parametrize("counter", [0, 1, 255, 256, 65536, 0x01020304, 0xFFFFFFFF])
def test_seal_ack_matches_the_edge_and_opens_there(devices, counter):
    d = devices["dev-a"]
    ack = seal_ack(d, counter)
    assert len(ack) == spec.ACK_SIZE
    assert ack == bytes(spec.seal_ack(CCM(d.key), d.kid, counter))
    assert spec.open_ack(CCM(d.key), d.kid, ack) == counter


def test_ack_for_one_device_does_not_open_for_another(devices):
    ack = seal_ack(devices["dev-a"], 5)
    a, b = devices["dev-a"], devices["dev-b"]
    with pytest.raises(AuthError, match="CCM tag mismatch"):
        spec.open_ack(CCM(b.key), b.kid, ack)
    with pytest.raises(FrameError, match="ACK is for key id %s, not ours" % a.kid.hex()):
        spec.open_ack(CCM(a.key), b.kid, ack)


# --- queries ------------------------------------------------------------------------


def test_query_round_trip_and_refusal_as_an_outcome(registry, frames, devices):
    from qis.gateway.verify import Query, open_uplink

    d = devices["dev-a"]
    data = frames.seal(d.key, d.kid, 40, bytes(spec.encode_query(spec.FULL, frames.TIME, 3, 1, frames.FULL_FP, 1)))
    q = open_uplink(data, registry)
    assert q == Query("dev-a", d.kid, 40, "full", frames.TIME, 3, 1, 1, frames.FULL_FP)
    assert refused_inside(data, registry, "dev-a", 40) == "unexpected frame type 3 (want outcome, 1)"
    small = frames.seal(d.key, d.kid, 41, bytes(spec.encode_query(spec.COMPACT, 5, 2, 1, frames.COMPACT_FP)))
    assert open_uplink(small, registry).profile == "compact"


@pytest.mark.parametrize("fields, reason", [
    ([1, 3, 1, 2, 1, 0], "a query must have 7 fields, got 6"),
    ([1, 3, 1, 2, 1, 2, bytes(4)], "probe must be an integer in 0..1, got 2"),
    ([1, 3, 1, 2, 1, 0, bytes(3)], "fingerprint must be 4 bytes"),
])
def test_bad_queries_are_refused_after_the_tag(registry, frames, fields, reason):
    from qis.gateway.verify import open_uplink

    with pytest.raises(Rejected) as info:
        open_uplink(frames.sealed_fields("dev-b", 3, fields), registry)
    assert (info.value.reason, info.value.authenticated, info.value.counter) == (reason, True, 3)


def test_seal_answer_matches_the_edge_encoder_and_opens_on_the_device(devices):
    d = devices["dev-a"]
    for prof in (spec.COMPACT, spec.FULL):
        data = seal_answer(d, 7, prof, spec.ANSWERED, 30, 3, [[0, 230], [2, 25]], [4, 255], [[3, 4, 255]])
        assert len(data) == prof.answer_size
        counter, answer = spec.open_answer(CCM(d.key), d.kid, data, prof)
        assert counter == 7 and answer[:4] == [spec.ANSWERED, 30, 3, [[0, 230], [2, 25]]]
