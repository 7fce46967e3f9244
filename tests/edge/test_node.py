from edgetest import load, rmtree, tmpdir

frame = load("frame")
store = load("store")
node_mod = load("node")
ccm_mod = load("ccm")

KEY = bytes(range(16))
KID = b"\x0a\x0b\x0c\x0d"
FP = bytes(16)


def _node(d, window=4, rto=100):
    return node_mod.Node(ccm_mod.CCM(KEY), KID, store.Counter(d, block=8), store.Outbox(d), frame.FULL,
                         window=window, rto_ms=rto, max_rto_ms=800)


def _conclude(n, label=0):
    return n.conclude(1764201600, 1, 1, label, 200, FP, [[label, 200]])


def _ack(counter, key=KEY):
    return frame.seal_ack(ccm_mod.CCM(key), KID, counter)


def test_conclude_send_ack():
    d = tmpdir("node")
    try:
        n = _node(d)
        c = _conclude(n)
        sent = n.poll(0)
        assert len(sent) == 1 and len(sent[0]) == 512
        assert n.receive(_ack(c)) == (node_mod.EVENT_ACKED, c)
        assert n.pending() == 0 and n.acked == 1
        assert n.poll(10000) == []  # nothing left to send
    finally:
        rmtree(d)


def test_window_limits_frames_in_flight():
    d = tmpdir("node")
    try:
        n = _node(d, window=3)
        counters = [_conclude(n) for _ in range(5)]
        assert len(n.poll(0)) == 3
        assert n.poll(1) == []  # window full, nothing due
        n.receive(_ack(counters[1]))
        more = n.poll(2)
        assert len(more) == 1  # one slot freed: the next frame in counter order
    finally:
        rmtree(d)


def test_frames_in_flight_use_the_window_slots_over_and_over():
    """Sending takes no frame-sized block: every frame sent is one of `window` buffers."""
    d = tmpdir("node")
    try:
        n = _node(d, window=2)
        seen = []
        for _ in range(6):
            c = _conclude(n)
            (sent,) = n.poll(0)
            assert bytes(sent) == bytes(store.Outbox(d).get(c))
            if not [b for b in seen if b is sent]:
                seen.append(sent)
            assert n.receive(_ack(c)) == (node_mod.EVENT_ACKED, c)
        assert len(seen) <= 2 and n.acked == 6
    finally:
        rmtree(d)


def test_retransmits_identical_bytes_with_backoff():
    d = tmpdir("node")
    try:
        n = _node(d, window=1, rto=100)
        _conclude(n)
        first = n.poll(0)[0]
        assert n.poll(50) == []
        again = n.poll(200)  # past the first deadline (100 ms + jitter <= 25)
        assert again == [first]  # the same sealed bytes: same counter, same nonce
        # the timeout doubled: not due 150 ms later, due 450 ms later
        assert n.poll(350) == []
        assert n.poll(700) == [first]
        assert n.retransmissions == 2
    finally:
        rmtree(d)


def test_reboot_resends_outbox_and_never_reuses_a_counter():
    d = tmpdir("node")
    try:
        n = _node(d)
        c1, c2 = _conclude(n), _conclude(n)
        before = n.poll(0)
        n.receive(_ack(c1))
        # power loss: a new node over the same flash
        n2 = _node(d)
        assert n2.pending() == 1
        assert n2.poll(0) == [before[1]]  # the unacknowledged frame, byte for byte
        c3 = _conclude(n2)
        assert c3 > c2
        assert n2.receive(_ack(c2)) == (node_mod.EVENT_ACKED, c2)
    finally:
        rmtree(d)


def test_forged_or_stale_acks_change_nothing():
    d = tmpdir("node")
    try:
        n = _node(d)
        c = _conclude(n)
        n.poll(0)
        event, reason = n.receive(_ack(c, key=bytes(16)))
        assert event == node_mod.EVENT_REJECTED and "tag mismatch" in reason
        event, _ = n.receive(b"\x00" * 32)
        assert event == node_mod.EVENT_REJECTED
        assert n.pending() == 1
        assert n.receive(_ack(c)) == (node_mod.EVENT_ACKED, c)
        assert n.receive(_ack(c)) == (node_mod.EVENT_STALE_ACK, c)
    finally:
        rmtree(d)


def test_outbox_limit_holds_back_observations():
    d = tmpdir("node")
    try:
        n = node_mod.Node(ccm_mod.CCM(KEY), KID, store.Counter(d), store.Outbox(d), frame.COMPACT, outbox_limit=2)
        n.conclude(1, 1, 1, 0, 1, bytes(4))
        assert n.can_conclude()
        n.conclude(1, 1, 1, 0, 1, bytes(4))
        assert not n.can_conclude()
    finally:
        rmtree(d)


def test_next_deadline():
    d = tmpdir("node")
    try:
        n = _node(d, window=1, rto=100)
        assert n.next_deadline(0) == -1
        _conclude(n)
        assert n.next_deadline(0) == 0  # a frame waits to be sent
        n.poll(0)
        wait = n.next_deadline(0)
        assert 100 <= wait <= 125
    finally:
        rmtree(d)


compat = load("compat")


def test_retransmission_timing_across_a_ticks_wrap():
    # The same schedule as test_retransmits_identical_bytes_with_backoff, starting 120 ms
    # before ticks_ms() wraps (2**30 on a 32-bit board and on CPython, 2**62 on the 64-bit
    # unix port): deadlines are ticks_add'ed, so the wrap changes nothing.
    def at(ms):
        return compat.ticks_add(compat.ticks_add(0, -120), ms)

    assert compat.ticks_diff(at(200), at(0)) == 200 and at(200) < at(0)  # really across the wrap
    d = tmpdir("node")
    try:
        n = _node(d, window=1, rto=100)
        _conclude(n)
        first = n.poll(at(0))[0]
        assert n.poll(at(50)) == []
        assert 50 <= n.next_deadline(at(50)) <= 75
        assert n.poll(at(200)) == [first]
        assert n.poll(at(350)) == []
        assert n.poll(at(700)) == [first]
        assert n.retransmissions == 2
    finally:
        rmtree(d)


def test_acks_of_frames_sealed_before_a_key_rotation_verify_under_the_retired_key():
    d = tmpdir("node")
    old_key, old_kid = bytes(range(16, 32)), b"\x01\x01\x01\x01"
    try:
        before = node_mod.Node(ccm_mod.CCM(old_key), old_kid, store.Counter(d, block=8), store.Outbox(d), frame.FULL)
        c_old = _conclude(before)
        # The device re-keyed: the same flash (counter, outbox), a new key; the old one retired.
        n = node_mod.Node(ccm_mod.CCM(KEY), KID, store.Counter(d, block=8), store.Outbox(d), frame.FULL,
                          retired=[(old_kid, ccm_mod.CCM(old_key))])
        c_new = _conclude(n)
        assert c_new > c_old  # the counter carries on across the rotation
        sent = n.poll(0)
        assert [f[8:12] for f in sent] == [old_kid, KID]  # the old frame keeps its sealed bytes
        stranger = frame.seal_ack(ccm_mod.CCM(bytes(16)), b"\x09\x09\x09\x09", c_old)
        assert n.receive(stranger) == (node_mod.EVENT_REJECTED, "ACK is for key id 09090909, not ours")
        assert n.receive(frame.seal_ack(ccm_mod.CCM(old_key), old_kid, c_old)) == (node_mod.EVENT_ACKED, c_old)
        assert n.receive(_ack(c_new)) == (node_mod.EVENT_ACKED, c_new)
        assert n.pending() == 0
    finally:
        rmtree(d)
