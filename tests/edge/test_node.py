from edgetest import load, rmtree, tmpdir

frame = load("frame")
store = load("store")
node_mod = load("node")
ccm_mod = load("ccm")
compat = load("compat")

KEY = bytes(range(16))
KID = b"\x0a\x0b\x0c\x0d"
FP = bytes(16)
FULL = 512


def _node(d, frames=4, rto=100, min_rto=50, max_rto=800):
    return node_mod.Node(ccm_mod.CCM(KEY), KID, store.Counter(d, block=8), store.Outbox(d), frame.FULL,
                         window_bytes=frames * FULL, rto_ms=rto, min_rto_ms=min_rto, max_rto_ms=max_rto)


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
        assert n.receive(_ack(c), 10) == (node_mod.EVENT_ACKED, c)
        assert n.pending() == 0 and n.acked == 1
        assert n.poll(10000) == []  # nothing left to send
    finally:
        rmtree(d)


def test_window_counts_bytes_in_flight():
    d = tmpdir("node")
    try:
        n = node_mod.Node(ccm_mod.CCM(KEY), KID, store.Counter(d), store.Outbox(d), frame.COMPACT,
                          window_bytes=3 * 51 + 50)
        counters = [n.conclude(1, 1, 1, 0, 1, bytes(4)) for _ in range(6)]
        assert len(n.poll(0)) == 3  # a fourth 51-byte frame would pass 203 bytes
        assert n.poll(1) == [] and n.next_deadline(1) > 0  # window full, nothing due
        n.receive(frame.seal_ack(ccm_mod.CCM(KEY), KID, counters[0]), 2)
        assert len(n.poll(3)) == 1  # 51 bytes freed: the next frame in counter order
        # one frame bigger than the whole window still goes, alone
        d2 = tmpdir("node")
        try:
            small = node_mod.Node(ccm_mod.CCM(KEY), KID, store.Counter(d2), store.Outbox(d2), frame.FULL,
                                  window_bytes=100)
            _conclude(small)
            _conclude(small)
            assert len(small.poll(0)) == 1
        finally:
            rmtree(d2)
    finally:
        rmtree(d)


def test_timeout_retransmits_identical_bytes_and_backs_off_only_on_silence():
    d = tmpdir("node")
    try:
        n = _node(d, frames=1, rto=100)
        _conclude(n)
        first = n.poll(0)[0]
        assert n.poll(50) == []
        again = n.poll(200)  # past the first deadline (100 ms + jitter <= 12)
        assert again == [first]  # the same sealed bytes: same counter, same nonce
        # nothing came back at all: the timeout doubled, not due 150 ms later, due 450 ms later
        assert n.rto() == 200
        assert n.poll(350) == []
        assert n.poll(700) == [first]
        assert n.retransmissions == 2 and n.rto() == 400
    finally:
        rmtree(d)


def test_a_lossy_but_live_link_keeps_its_timeout():
    # An ACK came back after the lost frame was sent: the link is alive, the loss is noise,
    # not congestion, so the retransmission timer does not double. Silence does double it.
    d = tmpdir("node")
    try:
        n = _node(d, frames=2, rto=100)
        a, b = _conclude(n), _conclude(n)
        sent = n.poll(0)
        assert len(sent) == 2
        n.receive(_ack(a), 40)  # RTT 40: rto = 40 + 4 * 20 = 120
        assert n.srtt == 40 and n.rto() == 120
        assert n.poll(99) == []
        assert n.poll(113) == [sent[1]]  # b's timer (100 + jitter <= 12) ran out
        assert n.rto() == 120  # heard from the link since b was sent: no back-off
        # b is lost again and nothing at all comes back: now it backs off
        assert n.poll(113 + 133) == [sent[1]]
        assert n.rto() == 240
        n.receive(_ack(b), 300)  # any verified ACK resets the back-off
        assert n.rto() == 120
    finally:
        rmtree(d)


def test_rtt_estimate_follows_rfc6298_and_karn():
    d = tmpdir("node")
    try:
        n = _node(d, frames=8, rto=1000, min_rto=10, max_rto=60000)
        cs = [_conclude(n) for _ in range(4)]
        assert len(n.poll(0)) == 4
        n.receive(_ack(cs[0]), 100)  # first sample: srtt 100, rttvar 50
        assert (n.srtt, n.rttvar, n.rto()) == (100, 50, 300)
        n.receive(_ack(cs[1]), 200)  # R=200: rttvar = (3*50 + 100)/4 = 62, srtt = (700 + 200)/8 = 112
        assert (n.srtt, n.rttvar, n.rto()) == (112, 62, 360)
        # cs[2] times out and is re-sent: its ACK gives no sample (Karn's rule)
        assert n.poll(5000)
        before = (n.srtt, n.rttvar)
        n.receive(_ack(cs[2]), 5010)
        assert (n.srtt, n.rttvar) == before
    finally:
        rmtree(d)


def test_later_ack_marks_earlier_frames_lost_without_waiting_for_the_timer():
    d = tmpdir("node")
    try:
        n = _node(d, frames=4, rto=1000, max_rto=60000)
        cs = [_conclude(n) for _ in range(3)]
        sent = n.poll(0)
        assert len(sent) == 3
        n.receive(_ack(cs[0]), 40)  # RTT 40 (min RTT 40: reorder window 10 ms)
        n.receive(_ack(cs[2]), 44)  # the frame in between never arrived
        # lost once it has waited the delivered frame's RTT (44) plus the reorder window (10),
        # not the 1 s RTO
        assert n.next_deadline(44) == 10
        assert n.poll(53) == []
        assert n.poll(54) == [sent[1]]  # the lost frame again, byte for byte
        assert n.retransmissions == 1 and n.rto() < 1000
    finally:
        rmtree(d)


def test_reboot_resends_outbox_and_never_reuses_a_counter():
    d = tmpdir("node")
    try:
        n = _node(d)
        c1, c2 = _conclude(n), _conclude(n)
        before = n.poll(0)
        n.receive(_ack(c1), 5)
        # power loss: a new node over the same flash
        n2 = _node(d)
        assert n2.pending() == 1
        assert n2.poll(0) == [before[1]]  # the unacknowledged frame, byte for byte
        c3 = _conclude(n2)
        assert c3 > c2
        assert n2.receive(_ack(c2), 5) == (node_mod.EVENT_ACKED, c2)
    finally:
        rmtree(d)


def test_forged_or_stale_acks_change_nothing():
    d = tmpdir("node")
    try:
        n = _node(d)
        c = _conclude(n)
        n.poll(0)
        event, reason = n.receive(_ack(c, key=bytes(16)), 1)
        assert event == node_mod.EVENT_REJECTED and "tag mismatch" in reason
        event, _ = n.receive(b"\x00" * 32, 1)
        assert event == node_mod.EVENT_REJECTED
        event, _ = n.receive(b"\x00" * frame.MULTI_ACK_SIZE, 1)
        assert event == node_mod.EVENT_REJECTED
        assert n.pending() == 1
        assert n.receive(_ack(c), 2) == (node_mod.EVENT_ACKED, c)
        assert n.receive(_ack(c), 3) == (node_mod.EVENT_STALE_ACK, c)
    finally:
        rmtree(d)


def test_multi_ack_acknowledges_several_counters_and_detects_the_gap():
    d = tmpdir("node")
    try:
        n = _node(d, frames=8, rto=1000, max_rto=60000)
        cs = [_conclude(n) for _ in range(5)]
        sent = n.poll(0)
        assert len(sent) == 5
        multi = frame.seal_multi_ack(ccm_mod.CCM(KEY), KID, [cs[0], cs[1], cs[3], cs[4]])
        event, counters = n.receive(multi, 50)
        assert event == node_mod.EVENT_ACKED_MANY and sorted(counters) == [cs[0], cs[1], cs[3], cs[4]]
        assert n.pending() == 1 and n.acked == 4
        assert n.poll(70) == [sent[2]]  # the one it left out, before its 1 s timer
        # the same multi-ACK again acknowledges nothing new
        assert n.receive(multi, 80) == (node_mod.EVENT_ACKED_MANY, [])
        other = frame.seal_multi_ack(ccm_mod.CCM(bytes(16)), KID, [cs[2]])
        assert n.receive(other, 90)[0] == node_mod.EVENT_REJECTED
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
        n = _node(d, frames=1, rto=100)
        assert n.next_deadline(0) == -1
        _conclude(n)
        assert n.next_deadline(0) == 0  # a frame waits to be sent
        n.poll(0)
        wait = n.next_deadline(0)
        assert 100 <= wait <= 112
    finally:
        rmtree(d)


def test_next_frame_hands_out_one_frame_at_a_time():
    d = tmpdir("node")
    try:
        n = _node(d, frames=4)
        cs = [_conclude(n) for _ in range(3)]
        one = n.next_frame(0)
        assert one is not None and n.transmissions == 1
        assert len(n.poll(0)) == 2 and n.next_frame(0) is None
        assert cs[0] < cs[1] < cs[2]
    finally:
        rmtree(d)


def test_retransmission_timing_across_a_ticks_wrap():
    # The same schedule as test_timeout_retransmits_identical_bytes_and_backs_off_only_on_silence,
    # starting 120 ms before ticks_ms() wraps (2**30 on a 32-bit board and on CPython, 2**62
    # on the 64-bit unix port): deadlines are ticks_add'ed, so the wrap changes nothing.
    def at(ms):
        return compat.ticks_add(compat.ticks_add(0, -120), ms)

    assert compat.ticks_diff(at(200), at(0)) == 200 and at(200) < at(0)  # really across the wrap
    d = tmpdir("node")
    try:
        n = _node(d, frames=1, rto=100)
        _conclude(n)
        first = n.poll(at(0))[0]
        assert n.poll(at(50)) == []
        assert 50 <= n.next_deadline(at(50)) <= 62
        assert n.poll(at(200)) == [first]
        assert n.poll(at(350)) == []
        assert n.poll(at(700)) == [first]
        assert n.retransmissions == 2
    finally:
        rmtree(d)
