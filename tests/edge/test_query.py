# Queries and answers on the device (edge.query, edge.frame) under pytest and MicroPython.
from edgetest import load, raises, rmtree, tmpdir

frame = load("frame")
query = load("query")
store = load("store")
ccm_mod = load("ccm")
cbor = load("cbor")
errors = load("errors")
compat = load("compat")

KEY = bytes(range(16))
KID = b"\x0a\x0b\x0c\x0d"
FP = bytes(range(16))


def _answer(counter, prof=frame.FULL, status=frame.ANSWERED, key=KEY, kid=KID):
    pt = frame.encode_answer(prof, status, 40, 3, [[0, 200], [2, 55]], [12, 230], [[3, 8, 240], [2, 4, 128]])
    return frame.seal(ccm_mod.CCM(key), kid, counter, pt, frame.DOWNLINK_IV)


def test_query_plaintext_layout():
    pt = frame.encode_query(frame.FULL, 1764201600, 3, 1, FP, 1)
    assert len(pt) == frame.FULL.plaintext_len
    value, end = cbor.loads_prefix(pt)
    assert value == [1, 3, 1764201600, 3, 1, 1, FP] and not any(pt[end:])
    small = frame.encode_query(frame.COMPACT, 0xFFFFFFFF, 65535, 65535, FP[:4])
    assert len(small) == frame.COMPACT.plaintext_len  # the worst case fits 23 bytes
    assert "fingerprint" in str(raises(errors.EncodeError, frame.encode_query, frame.FULL, 1, 1, 1, FP[:4]))
    assert "probe" in str(raises(errors.EncodeError, frame.encode_query, frame.FULL, 1, 1, 1, FP, 2))


def test_answers_fit_their_profile_and_open_on_the_device():
    sealed = _answer(9)
    assert len(sealed) == frame.FULL.answer_size == 128
    counter, answer = frame.open_answer(ccm_mod.CCM(KEY), KID, sealed, frame.FULL)
    assert counter == 9
    assert answer == [0, 40, 3, [[0, 200], [2, 55]], [12, 230], [[3, 8, 240], [2, 4, 128]]]
    small = _answer(10, frame.COMPACT)
    assert len(small) == frame.COMPACT.answer_size == 51
    assert frame.open_answer(ccm_mod.CCM(KEY), KID, small, frame.COMPACT)[1] == [0, 40, 3, [[0, 200], [2, 55]],
                                                                                 [12, 230], []]


def test_a_compact_answer_shrinks_to_fit():
    pt = frame.encode_answer(frame.COMPACT, 0, 100000, 300, [[1000, 200], [2000, 55], [3, 1]], [70000, 230], [])
    value, _ = cbor.loads_prefix(pt)
    assert value[3:5] == [255, 255] and value[6] == [255, 230]  # "255 or more"
    assert len(value[5]) <= 2 and value[5][0] == [1000, 200]


def test_asker_resends_identical_bytes_then_gives_up():
    d = tmpdir("ask")
    try:
        a = query.Asker(ccm_mod.CCM(KEY), KID, store.Counter(d, block=4), frame.FULL, rto_ms=100, tries=3)
        c = a.ask(0, 1764201600, 3, 1, FP)
        first = a.poll(0)
        assert len(first) == 1 and len(first[0]) == frame.FULL.size
        assert a.poll(50) == [] and a.next_deadline(50) == 50
        assert a.poll(100) == first and a.poll(200) == []  # the wait doubles: 100, then 200 ms
        assert a.poll(300) == first and a.next_deadline(300) == 400
        assert a.poll(699) == [] and a.given_up() == []
        assert a.poll(700) == [] and a.given_up() == [c]
        assert a.pending() == 0 and a.unanswered == 1
    finally:
        rmtree(d)


def test_asker_waits_doubling_up_to_its_cap():
    d = tmpdir("ask")
    try:
        a = query.Asker(ccm_mod.CCM(KEY), KID, store.Counter(d, block=4), frame.FULL, rto_ms=100, tries=5,
                        max_rto_ms=300)
        a.ask(0, 1764201600, 3, 1, FP)
        sent = [t for t in range(0, 2000, 50) if a.poll(t)]
        assert sent == [0, 100, 300, 600, 900]  # waits of 100, 200, then 300 (the cap)
        assert a.given_up() != [] and a.unanswered == 1
    finally:
        rmtree(d)


def test_asker_takes_counters_from_the_outcome_counter_and_verifies_answers():
    d = tmpdir("ask")
    try:
        counter = store.Counter(d, block=4)
        a = query.Asker(ccm_mod.CCM(KEY), KID, counter, frame.FULL, limit=1)
        assert counter.next() == 0  # an outcome took counter 0
        c = a.ask(0, 1, 3, 1, FP)
        assert c == 1 and not a.can_ask()
        assert "already pending" in str(raises(errors.QisError, a.ask, 0, 1, 3, 1, FP))
        forged = bytearray(_answer(c))
        forged[40] ^= 1
        assert a.receive(bytes(forged))[0] == query.EVENT_REJECTED
        assert a.receive(_answer(c, key=bytes(16)))[0] == query.EVENT_REJECTED
        assert a.receive(_answer(c, kid=b"\x00\x00\x00\x01"))[0] == query.EVENT_REJECTED
        event, (got, answer) = a.receive(_answer(c))
        assert (event, got, answer[0]) == (query.EVENT_ANSWER, c, frame.ANSWERED)
        assert a.receive(_answer(c)) == (query.EVENT_STALE, c)  # a repeated answer changes nothing
        assert a.pending() == 0 and a.answered == 1
    finally:
        rmtree(d)


def test_an_answer_with_a_bad_plaintext_is_refused_after_the_tag():
    c = ccm_mod.CCM(KEY)
    for body in (b"\xd8\x1c\x80", b"\x82\x01\x05", cbor.dumps([1, 5, 0, 1, 1, [], [0, 0], []]) + b"\x01"):
        pt = body + bytes(frame.FULL.answer_plaintext_len - len(body))
        sealed = frame.seal(c, KID, 3, pt, frame.DOWNLINK_IV)
        raises(errors.QisError, frame.open_answer, c, KID, sealed, frame.FULL)
