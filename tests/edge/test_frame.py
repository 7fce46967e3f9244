import json

from edgetest import load, raises, unhex, vector_path

frame = load("frame")
ccm_mod = load("ccm")
errors = load("errors")

with open(vector_path("frames.json")) as f:
    VECTORS = json.load(f)
KEY = unhex(VECTORS["key"])
KID = unhex(VECTORS["kid"])


def _seal(prof, counter, fields):
    pt = frame.encode_outcome(prof, fields["time"], fields["model"], fields["domain"], fields["label"],
                              fields["confidence"], unhex(fields["fingerprint"]), fields["topk"])
    return pt, frame.seal(ccm_mod.CCM(KEY), KID, counter, pt, frame.UPLINK_IV)


def test_profile_sizes():
    assert frame.COMPACT.size == 51 and frame.COMPACT.plaintext_len == 23
    assert frame.FULL.size == 512 and frame.FULL.plaintext_len == 483
    assert frame.ACK_PLAINTEXT_LEN == 5
    assert frame.COMPACT.fingerprint_len == 4 and frame.FULL.fingerprint_len == 16


def test_golden_outcome_frames():
    for v in VECTORS["outcomes"]:
        pt, sealed = _seal(frame.profile(v["profile"]), v["counter"], v["fields"])
        assert pt == unhex(v["plaintext"]), v["name"]
        assert sealed == unhex(v["frame"]), v["name"]
        assert len(sealed) == frame.profile(v["profile"]).size


def test_golden_acks_seal_and_open():
    ccm = ccm_mod.CCM(KEY)
    for v in VECTORS["acks"]:
        assert frame.seal_ack(ccm, KID, v["counter"]) == unhex(v["frame"])
        assert frame.open_ack(ccm, KID, unhex(v["frame"])) == v["counter"]


def test_every_frame_of_a_profile_has_its_size():
    ccm = ccm_mod.CCM(KEY)
    for prof in (frame.COMPACT, frame.FULL):
        for counter, value in ((0, 0), (23, 23), (24, 24), (255, 255), (65535, 255), (0xFFFFFFFF, 200)):
            label = value if prof.topk_max else value % 256
            topk = [[label, value % 256]] * prof.topk_max
            pt = frame.encode_outcome(prof, counter, label, label, label, value % 256, bytes(prof.fingerprint_len), topk)
            assert len(pt) == prof.plaintext_len
            assert len(frame.seal(ccm, KID, counter, pt, frame.UPLINK_IV)) == prof.size


def test_outcome_padded_into_a_reused_buffer_is_the_same_plaintext():
    args = (frame.FULL, 1764201600, 3, 1, 2, 201, bytes(range(16)), [[2, 201], [0, 40]])
    out = bytearray(b"\xff" * frame.FULL.plaintext_len)  # stale bytes must not survive
    got = frame.encode_outcome(*args, out=out)
    assert got is out and bytes(out) == bytes(frame.encode_outcome(*args))
    raises(errors.EncodeError, frame.encode_outcome, *args, out=bytearray(10))


def test_compact_refuses_what_does_not_fit():
    err = raises(errors.EncodeError, frame.encode_outcome, frame.COMPACT, 0xFFFFFFFF, 300, 300, 300, 255, bytes(4))
    assert "plaintext bytes" in str(err)


def test_field_checks():
    p = frame.FULL
    fp = bytes(16)
    assert "confidence" in str(raises(errors.EncodeError, frame.encode_outcome, p, 1, 1, 1, 1, 256, fp))
    assert "time" in str(raises(errors.EncodeError, frame.encode_outcome, p, -1, 1, 1, 1, 1, fp))
    assert "fingerprint" in str(raises(errors.EncodeError, frame.encode_outcome, p, 1, 1, 1, 1, 1, bytes(4)))
    assert "top-k" in str(raises(errors.EncodeError, frame.encode_outcome, p, 1, 1, 1, 1, 1, fp, [[1, 2]] * 6))
    assert "top-k" in str(raises(errors.EncodeError, frame.encode_outcome, frame.COMPACT, 1, 1, 1, 1, 1, bytes(4), [[1, 2]]))
    assert "counter" in str(raises(errors.EncodeError, frame.piv_bytes, 1 << 32))
    assert "profile" in str(raises(errors.FrameError, frame.profile, "huge"))


def test_ack_checks():
    ccm = ccm_mod.CCM(KEY)
    ack = frame.seal_ack(ccm, KID, 9)
    raises(errors.FrameError, frame.open_ack, ccm, KID, ack[:-1])
    other = frame.seal_ack(ccm, b"\x00\x00\x00\x01", 9)
    assert "not ours" in str(raises(errors.FrameError, frame.open_ack, ccm, KID, other))
    for i in (20, len(ack) - 1):
        bad = bytearray(ack)
        bad[i] ^= 0x01
        raises(errors.AuthError, frame.open_ack, ccm, KID, bytes(bad))
    raises(errors.AuthError, frame.open_ack, ccm_mod.CCM(bytes(16)), KID, ack)
    # an outcome sealed with the uplink IV can never pass as an ACK, even at ACK size
    uplink = frame.seal(ccm, KID, 9, frame.ack_plaintext(), frame.UPLINK_IV)
    raises(errors.AuthError, frame.open_ack, ccm, KID, uplink)


def test_ack_of_another_version_is_named():
    ccm = ccm_mod.CCM(KEY)
    v2 = bytes([0x82, 0x02, 0x02, 0x00, 0x00])
    sealed = frame.seal(ccm, KID, 5, v2, frame.DOWNLINK_IV)
    assert "version 2" in str(raises(errors.FrameError, frame.open_ack, ccm, KID, sealed))


def test_golden_queries_seal():
    ccm = ccm_mod.CCM(KEY)
    for v in VECTORS["queries"]:
        f, prof = v["fields"], frame.profile(v["profile"])
        pt = frame.encode_query(prof, f["time"], f["model"], f["domain"], unhex(f["fingerprint"]), f["probe"])
        assert bytes(pt) == unhex(v["plaintext"]), v["name"]
        assert bytes(frame.seal(ccm, KID, v["counter"], pt, frame.UPLINK_IV)) == unhex(v["frame"]), v["name"]


def test_golden_answers_seal_and_open():
    ccm = ccm_mod.CCM(KEY)
    for v in VECTORS["answers"]:
        f, prof = v["fields"], frame.profile(v["profile"])
        pt = frame.encode_answer(prof, f["status"], f["outcomes"], f["sites"], f["labels"], f["confirmed"], f["models"])
        assert bytes(pt) == unhex(v["plaintext"]), v["name"]
        assert bytes(frame.seal(ccm, KID, v["counter"], pt, frame.DOWNLINK_IV)) == unhex(v["frame"]), v["name"]
        counter, fields = frame.open_answer(ccm, KID, unhex(v["frame"]), prof)
        assert counter == v["counter"] and fields[0] == f["status"] and fields[3] == f["labels"], v["name"]


def test_golden_multi_acks_seal_and_open():
    ccm = ccm_mod.CCM(KEY)
    for v in VECTORS["multi_acks"]:
        sealed = frame.seal_multi_ack(ccm, KID, v["counters"])
        assert sealed == unhex(v["frame"]) and len(sealed) == frame.MULTI_ACK_SIZE
        assert frame.open_multi_ack(ccm, KID, sealed) == v["counters"]


def test_multi_ack_checks():
    ccm = ccm_mod.CCM(KEY)
    multi = frame.seal_multi_ack(ccm, KID, [40, 8])
    raises(errors.FrameError, frame.open_multi_ack, ccm, KID, multi[:-1])
    assert "not ours" in str(raises(errors.FrameError, frame.open_multi_ack, ccm, b"\x00\x00\x00\x01", multi))
    for i in (14, 21, 25, len(multi) - 1):  # the bitmap and the counter are covered by the tag
        bad = bytearray(multi)
        bad[i] ^= 0x01
        raises(errors.AuthError, frame.open_multi_ack, ccm, KID, bytes(bad))
    assert "more than 32 below" in str(raises(errors.EncodeError, frame.seal_multi_ack, ccm, KID, [40, 7]))
    raises(errors.EncodeError, frame.seal_multi_ack, ccm, KID, [])
    # an ACK's nonce space never opens a multi-ACK and the other way round
    as_ack = frame.seal(ccm, KID, 9, frame.MULTI_ACK_PLAINTEXT, frame.DOWNLINK_IV)
    raises(errors.FrameError, frame.open_multi_ack, ccm, KID, as_ack)
    piv = frame.multi_ack_piv([3, 2])
    forged = ccm_mod.CCM(KEY)
    wrong_iv = load("cose").encrypt0(forged, KID, piv, frame.MULTI_ACK_PLAINTEXT, frame.DOWNLINK_IV)
    raises(errors.AuthError, frame.open_multi_ack, ccm, KID, wrong_iv)
    # a bitmap naming counters below 0 is refused, not wrapped
    below = load("cose").encrypt0(ccm, KID, b"\x00\x00\x00\x01\xc0\x00\x00\x00", frame.MULTI_ACK_PLAINTEXT,
                                  frame.MULTI_ACK_IV)
    assert "below 0" in str(raises(errors.FrameError, frame.open_multi_ack, ccm, KID, below))
