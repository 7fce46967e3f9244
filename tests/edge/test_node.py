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


def _send_times(n, start, end):
    """The times (ms) at which polling every millisecond from start to end sends something."""
    return [t for t in range(start, end) if n.poll(t)]


def test_frames_sent_are_read_into_one_buffer_over_and_over():
    """Sending takes no frame-sized block: next_frame reads every frame into one buffer."""
    d = tmpdir("node")
    try:
        n = _node(d, frames=2)
        seen = []
        for _ in range(6):
            c = _conclude(n)
            sent = n.next_frame(0)
            assert bytes(sent) == bytes(store.Outbox(d).get(c))
            if not [b for b in seen if b is sent]:
                seen.append(sent)
            assert n.receive(_ack(c), 1) == (node_mod.EVENT_ACKED, c)
        assert len(seen) == 1 and n.acked == 6
    finally:
        rmtree(d)


def test_timeout_retransmits_identical_bytes_and_stretches_only_on_silence():
    d = tmpdir("node")
    try:
        n = _node(d, frames=1, rto=100, max_rto=800)
        _conclude(n)
        first = n.poll(0)[0]
        assert n.poll(50) == []
        again = n.poll(113)  # past the first deadline (100 ms + jitter <= 12)
        assert again == [first]  # the same sealed bytes: same counter, same nonce
        sends = [113] + _send_times(n, 114, 7000)
        gaps = [b - a for a, b in zip(sends, sends[1:])]
        # silence up to four timeouts: the timeout stays; then a quarter of the silence so far
        assert all(100 <= g <= 113 for g in gaps[:2]), gaps
        assert all(b >= a for a, b in zip(gaps[2:], gaps[3:])), gaps
        assert 800 <= max(gaps) <= 800 + 100, gaps  # up to max_rto_ms (plus jitter)
        # an ACK ends the silence: the next frame gets the base timeout again
        n.receive(_ack(0), 7000)
        _conclude(n)
        assert len(n.poll(7001)) == 1
        assert 100 <= n.next_deadline(7001) <= 112
    finally:
        rmtree(d)


def test_a_lossy_but_live_link_keeps_its_timeout():
    # ACKs keep coming for other frames: a lost frame is noise, not congestion, and its
    # retransmission timer does not stretch.
    d = tmpdir("node")
    try:
        n = _node(d, frames=1, rto=100, max_rto=60000)
        counters = [_conclude(n) for _ in range(12)]
        t = 0
        gaps = []
        for i, c in enumerate(counters):
            sent = n.poll(t)
            assert len(sent) == 1
            if i % 2:  # every other frame is lost once: re-sent after its timeout
                resend = _send_times(n, t + 1, t + 2000)[0]
                gaps.append(resend - t)
                t = resend
            t += 40
            n.receive(_ack(c), t)
        # no doubling, no stretching: the timeout follows the measured RTT of 40 ms down
        assert all(b <= a for a, b in zip(gaps, gaps[1:])) and max(gaps) < 200, gaps
    finally:
        rmtree(d)


def test_rtt_estimate_follows_rfc6298_karn_and_the_queue():
    d = tmpdir("node")
    try:
        n = _node(d, frames=8, rto=1000, min_rto=10, max_rto=60000)
        cs = [_conclude(n) for _ in range(4)]
        assert len(n.poll(0)) == 4  # sent into 512, 1024, 1536 and 2048 bytes in flight
        n.receive(_ack(cs[0]), 100)  # first sample: srtt 100, rttvar 50, base RTT 100
        assert (n.srtt, n.rttvar, n.min_rtt) == (100, 50, 100)
        assert n.timeout_ms(100, 512) == 300
        # R = 200 behind 1 KiB: deviation from the expected 100 is 100 -> rttvar (150 + 100) / 4,
        # srtt (700 + 200) / 8, and the queue costs (100 ms per KiB) / 8 = 12 ms per KiB so far
        n.receive(_ack(cs[1]), 200)
        assert (n.srtt, n.rttvar, n.min_rtt) == (112, 62, 100)
        assert n.expected_rtt(1024) == 112 and n.expected_rtt(8192) == 196
        assert n.timeout_ms(200, 512) < n.timeout_ms(200, 8192)  # an empty line answers sooner
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
        assert n.retransmissions == 1 and n.timeout_ms(54, 512) < 1000
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
    # A retransmission schedule starting 120 ms before ticks_ms() wraps (2**30 on a 32-bit
    # board and on CPython, 2**62 on the 64-bit unix port): deadlines are ticks_add'ed, so
    # the wrap changes nothing.
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
        assert n.poll(at(120)) == [first]
        assert n.poll(at(180)) == []
        assert n.poll(at(240)) == [first]
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
