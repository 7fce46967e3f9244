# The device's send/ack/retransmit state machine, sans-IO: the caller passes in the time
# and the bytes it received, and gets back the frames to transmit and the events.
#
# Rules
# - conclude() takes a counter, seals the frame ONCE and writes it to the outbox before it
#   can be sent; frames are only ever sent from the outbox.
# - The window is in bytes: at most `window_bytes` of frames are in flight (sent, not yet
#   acknowledged, not known lost), so a link gets as many frames in flight as fit its
#   bandwidth x delay; one frame may always be in flight, whatever its size. Frames are
#   sent oldest first; frames known lost go before new ones.
# - The retransmission timeout comes from measured round trips (RFC 6298: smoothed RTT,
#   RTTVAR, RTO = expected RTT + 4 RTTVAR within [min_rto_ms, max_rto_ms]), with the
#   queue taken into account: a frame's expected RTT is the base (smallest) RTT plus the
#   measured time per KiB of the bytes in flight ahead of it, so a frame sent into an
#   empty line is not given the timeout of one sent behind a full window. Karn's rule: a
#   frame sent more than once gives no RTT sample (nor a RACK time) unless its ACK came
#   later than the base RTT after the last copy. Every verified ACK restarts the timers of
#   the frames in flight, so a timer runs out only after a timeout without an answer.
# - Loss is detected first by later ACKs (RACK, RFC 8985): when a frame is acknowledged,
#   every frame still in flight that was last sent before it is lost once it has waited
#   that frame's RTT plus a reorder window (min RTT / 4): its timer is brought forward to
#   then, instead of waiting for the RTO.
# - The timer backs off only when nothing at all comes back from the link: on a point-to-
#   point line a lost frame says nothing about load, and a noisy line that answers now and
#   then keeps its RTO. Once the link has been silent for more than four RTOs (while frames
#   were out), the timeout is a quarter of the silence so far (up to max_rto_ms): a dead
#   link or gateway is retried less and less often. Any ACK that verifies ends the silence.
#   A per-frame jitter keeps devices sharing a medium from retransmitting in step.
# - A retransmission re-sends the identical sealed bytes: same counter, nonce, plaintext.
# - A frame leaves the outbox only when an ACK (single, or a multi-ACK naming its counter)
#   verifies under the key that sealed it: the device key, or a retired one while outbox
#   frames sealed under it wait (a key rotation, docs/PROTOCOL.md). An ACK for a counter no
#   longer pending is harmless (a duplicate ACK) and ignored.
# - After a reboot the outbox is sent again from its oldest frame.
from . import frame
from .compat import const, ticks_add, ticks_diff, ticks_ms
from .errors import QisError

EVENT_ACKED = "acked"  # detail: the counter
EVENT_ACKED_MANY = "acked-many"  # detail: the list of counters a multi-ACK newly acknowledged
EVENT_STALE_ACK = "stale-ack"
EVENT_REJECTED = "rejected"

# In-flight entry fields: [frame size, last sent (ms), deadline (ms), transmissions, lost,
# transmission sequence number (orders transmissions sent in the same millisecond), bytes
# in flight when it was last sent (itself included: the queue it joined)]. The
# frame itself stays on flash (the outbox) and is read again to be re-sent: RAM holds no
# frames, so the window can fit the link rather than the heap.
_SIZE = const(0)
_SENT = const(1)
_DEADLINE = const(2)
_TIMES = const(3)
_LOST = const(4)
_SEQ = const(5)
_AHEAD = const(6)


class Node:
    def __init__(self, ccm, kid, counter, outbox, prof, window_bytes=8192, rto_ms=1000, min_rto_ms=100,
                 max_rto_ms=60000, outbox_limit=64, retired=()):
        """retired: (kid, ccm) pairs of retired keys, to verify the ACKs of outbox frames
        they sealed; new frames are sealed under (kid, ccm) only."""
        self._ccm = ccm
        self.kid = bytes(kid)
        self._keys = {self.kid: ccm}
        for old_kid, old_ccm in retired:
            self._keys[bytes(old_kid)] = old_ccm
        self._counter = counter
        self._outbox = outbox
        self.profile = prof
        self.window_bytes = window_bytes
        self.rto_ms = rto_ms  # the timeout until the first RTT sample
        self.min_rto_ms = min_rto_ms
        self.max_rto_ms = max_rto_ms
        self.outbox_limit = outbox_limit
        self._inflight = {}  # counter -> entry (see the field constants above)
        self._bytes = 0  # bytes of the in-flight entries not marked lost
        self.srtt = -1  # smoothed RTT (ms), -1 until the first sample
        self.rttvar = 0  # smoothed deviation of the samples from their expected RTT
        self.min_rtt = -1  # the base RTT: the smallest sample
        self._ms_per_kb = 0  # smoothed queueing time per KiB in flight ahead of a frame
        self._quiet_since = None  # since when the link has said nothing while frames were out
        self._seq = 0  # transmissions so far, numbering them
        self._rack_seq = 0  # the latest transmission known delivered (RACK)
        self._rack_rtt = 0  # and its round trip
        self._sealed = bytearray(prof.size)  # conclude() seals here, then writes it to the outbox
        self._plain = bytearray(prof.plaintext_len)  # conclude() pads the plaintext here
        self._send = bytearray(prof.size)  # next_frame() reads the frame to send from flash into this
        self.concluded = 0
        self.transmissions = 0
        self.retransmissions = 0
        self.acked = 0

    def can_conclude(self):
        """False while the outbox is full: the caller should hold its next observation."""
        return len(self._outbox) < self.outbox_limit

    def pending(self):
        return len(self._outbox)

    def conclude(self, time, model, domain, label, confidence, fingerprint, topk=(), ext=None):
        """Seal one outcome, keep it in the outbox, and return its counter."""
        plaintext = frame.encode_outcome(
            self.profile, time, model, domain, label, confidence, fingerprint, topk, ext, self._plain
        )
        counter = self._counter.next()
        self._outbox.put(counter, frame.seal(self._ccm, self.kid, counter, plaintext, frame.UPLINK_IV, self._sealed))
        self.concluded += 1
        return counter

    # -- sending -------------------------------------------------------------------------

    def expected_rtt(self, ahead):
        """The round trip a frame sent into `ahead` bytes in flight (itself included)
        should take: the base RTT plus the time the queue ahead of it takes, as measured."""
        if self.srtt < 0:
            return self.rto_ms
        return self.min_rtt + ((self._ms_per_kb * ahead) >> 10)

    def timeout_ms(self, now, ahead):
        """The retransmission timeout of a frame sent at now into `ahead` bytes in flight:
        its expected RTT + 4 RTTVAR within [min_rto_ms, max_rto_ms] (before the first sample,
        rto_ms); or, once the link has said nothing for more than four of those, a quarter
        of that silence (up to max_rto_ms). A noisy line that answers now and then keeps its
        timeout; a dead one is retried less and less often (x1.25 per retry), and at once
        again when it answers."""
        if self.srtt < 0:
            rto = self.rto_ms
        else:
            rto = self.expected_rtt(ahead) + max(1, 4 * self.rttvar)
            rto = self.min_rto_ms if rto < self.min_rto_ms else rto
        if self._quiet_since is not None:
            quiet = ticks_diff(now, self._quiet_since) >> 2
            if quiet > rto:
                rto = quiet
        return rto if rto < self.max_rto_ms else self.max_rto_ms

    def _expire(self, now):
        """Mark the frames whose timer ran out as lost (they go before new frames)."""
        for entry in self._inflight.values():
            if not entry[_LOST] and ticks_diff(now, entry[_DEADLINE]) >= 0:
                entry[_LOST] = True
                self._bytes -= entry[_SIZE]

    def _fits(self, size):
        return self._bytes == 0 or self._bytes + size <= self.window_bytes

    def _candidate(self):
        """(counter, entry or None) of the next frame to send, or None: lost ones first."""
        best = None
        for counter, entry in self._inflight.items():
            if entry[_LOST] and (best is None or counter < best):
                best = counter
        if best is not None:
            return best, self._inflight[best]
        if len(self._inflight) >= len(self._outbox):
            return None
        for counter in self._outbox.pending():
            if counter not in self._inflight:
                return counter, None
        return None

    def next_frame(self, now):
        """The next frame to transmit at time now (ms), or None: lost frames first, then
        new ones, while the window has room. Call until None, or one at a time for a link
        that must pace its transmissions. The frame is read from flash into one buffer
        that the next call reuses: a link sends (or copies) it before it asks again."""
        self._expire(now)
        found = self._candidate()
        if found is None:
            return None
        counter, entry = found
        size = self.profile.size if entry is None else entry[_SIZE]  # every frame of a node has its profile's size
        if not self._fits(size):
            return None  # a new frame stays only in the outbox (not read from flash for nothing)
        if entry is None:
            entry = [size, now, now, 0, True, 0, 0]
            self._inflight[counter] = entry
        if self._quiet_since is None:
            self._quiet_since = now
        entry[_AHEAD] = self._bytes + entry[_SIZE]
        rto = self.timeout_ms(now, entry[_AHEAD])
        entry[_SENT] = now
        entry[_DEADLINE] = ticks_add(now, rto + self._jitter(counter, rto))
        entry[_TIMES] += 1
        entry[_LOST] = False
        self._seq += 1
        entry[_SEQ] = self._seq
        self._bytes += entry[_SIZE]
        self.transmissions += 1
        if entry[_TIMES] > 1:
            self.retransmissions += 1
        return self._outbox.get(counter, self._send)

    def poll(self, now):
        """Every frame to transmit at time now (ms), as a list of copies."""
        out = []
        while True:
            sealed = self.next_frame(now)
            if sealed is None:
                return out
            out.append(bytes(sealed))

    def _jitter(self, counter, rto):
        return ((counter * 2654435761) >> 7) % (rto // 8 + 1)

    def next_deadline(self, now):
        """Milliseconds until next_frame() has something to do (0: now), or -1 if nothing
        is in flight or waiting."""
        wait = -1
        for entry in self._inflight.values():
            if entry[_LOST]:
                if self._fits(entry[_SIZE]):
                    return 0
                continue
            d = ticks_diff(entry[_DEADLINE], now)
            if d < 0:
                d = 0
            if wait < 0 or d < wait:
                wait = d
        if len(self._outbox) > len(self._inflight) and self._fits(self.profile.size):
            return 0
        return wait

    # -- receiving -----------------------------------------------------------------------

    def receive(self, data, now=None):
        """Handle one received frame; returns (event, detail): EVENT_ACKED with the
        counter, EVENT_ACKED_MANY with the list of counters a multi-ACK newly acknowledged,
        EVENT_STALE_ACK with the counter, or EVENT_REJECTED with the reason."""
        if now is None:
            now = ticks_ms()
        try:
            kid = bytes(frame.ack_kid(data))
            ccm = self._keys.get(kid)
            if ccm is None:
                return (EVENT_REJECTED, "ACK is for key id %s, not ours" % kid.hex())
            if len(data) == frame.MULTI_ACK_SIZE:
                counters = frame.open_multi_ack(ccm, kid, data)
            else:
                counters = (frame.open_ack(ccm, kid, data),)
        except QisError as exc:
            return (EVENT_REJECTED, str(exc))
        self._quiet_since = None
        newly = []
        for counter in counters:
            self._settle(counter, now)
            if self._outbox.remove(counter):
                self.acked += 1
                newly.append(counter)
        self._restart_timers(now)
        self._detect_losses()
        if self._inflight:
            self._quiet_since = now  # frames still out: the quiet is counted from this answer
        if len(data) == frame.MULTI_ACK_SIZE:
            return (EVENT_ACKED_MANY, newly)
        return (EVENT_ACKED, counters[0]) if newly else (EVENT_STALE_ACK, counters[0])

    def _settle(self, counter, now):
        """Take an acknowledged frame out of flight; learn its RTT and its send time."""
        entry = self._inflight.pop(counter, None)
        if entry is None or entry[_TIMES] == 0:
            return
        if not entry[_LOST]:
            self._bytes -= entry[_SIZE]
        rtt = ticks_diff(now, entry[_SENT])
        if entry[_TIMES] == 1:
            self._sample(rtt, entry[_AHEAD])
        elif self.min_rtt < 0 or rtt < self.min_rtt:
            return  # too soon to answer the last copy: no RTT sample (Karn), no RACK time
        if entry[_SEQ] > self._rack_seq:
            self._rack_seq, self._rack_rtt = entry[_SEQ], rtt

    def _sample(self, rtt, ahead):
        """RFC 6298 section 2, in integer milliseconds, with the queue taken out: a sample
        is the base RTT plus the time of the bytes that were in flight ahead of the frame
        (measured as ms per KiB), so a frame sent into an empty line is not given the
        timeout of one sent behind a full window."""
        if rtt < 0:
            return
        if self.srtt < 0:
            self.srtt, self.rttvar, self.min_rtt = rtt, rtt // 2, rtt
            return
        if rtt < self.min_rtt:
            self.min_rtt = rtt
        err = rtt - self.expected_rtt(ahead)
        self.rttvar = (3 * self.rttvar + (err if err > 0 else -err)) // 4
        self.srtt = (7 * self.srtt + rtt) // 8
        if ahead > 0:
            per_kb = ((rtt - self.min_rtt) << 10) // ahead
            self._ms_per_kb = (7 * self._ms_per_kb + per_kb) >> 3

    def _restart_timers(self, now):
        """The link answered: every timer runs a full RTO from now (RFC 6298 5.3), so a
        timeout means an RTO of silence; losses under it are RACK's to find."""
        for counter, entry in self._inflight.items():
            if not entry[_LOST]:
                rto = self.timeout_ms(now, entry[_AHEAD])
                due = ticks_add(now, rto + self._jitter(counter, rto))
                if ticks_diff(due, entry[_DEADLINE]) > 0:
                    entry[_DEADLINE] = due

    def _detect_losses(self):
        """RACK: a frame last sent before the latest delivered one is lost once it has
        waited that one's RTT plus the reorder window; bring its timer forward to then."""
        wait = self._rack_rtt + (self.min_rtt // 4 if self.min_rtt > 0 else 0)
        for entry in self._inflight.values():
            if not entry[_LOST] and entry[_TIMES] and entry[_SEQ] < self._rack_seq:
                due = ticks_add(entry[_SENT], wait)
                if ticks_diff(due, entry[_DEADLINE]) < 0:
                    entry[_DEADLINE] = due
