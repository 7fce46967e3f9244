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
# - The retransmission timeout comes from measured round trips (RFC 6298): a smoothed RTT
#   and its variance, RTO = SRTT + 4 RTTVAR within [min_rto_ms, max_rto_ms]. Karn's rule:
#   a frame sent more than once gives no RTT sample.
# - Loss is detected first by later ACKs (RACK, RFC 8985): when a frame is acknowledged,
#   every frame still in flight that was last sent before it is lost once it has waited
#   that frame's RTT plus a reorder window (min RTT / 4): its timer is brought forward to
#   then, instead of waiting for the RTO.
# - The timer backs off (doubles, up to max_rto_ms) only when nothing at all came back
#   from the link since the frame was sent: on a point-to-point line a lost frame says
#   nothing about load, silence does. Any ACK that verifies resets the back-off. A per-
#   frame jitter keeps devices sharing a medium from retransmitting in step.
# - A retransmission re-sends the identical sealed bytes: same counter, nonce, plaintext.
# - A frame leaves the outbox only when an ACK (single, or a multi-ACK naming its counter)
#   verifies under the device key. An ACK for a counter no longer pending is harmless (a
#   duplicate ACK) and ignored.
# - After a reboot the outbox is sent again from its oldest frame.
from . import frame
from .compat import const, ticks_add, ticks_diff, ticks_ms
from .errors import QisError

EVENT_ACKED = "acked"  # detail: the counter
EVENT_ACKED_MANY = "acked-many"  # detail: the list of counters a multi-ACK newly acknowledged
EVENT_STALE_ACK = "stale-ack"
EVENT_REJECTED = "rejected"

# In-flight entry fields: [sealed bytes, last sent (ms), deadline (ms), transmissions, lost,
# transmission sequence number (orders transmissions sent in the same millisecond)]
_FRAME = const(0)
_SENT = const(1)
_DEADLINE = const(2)
_TIMES = const(3)
_LOST = const(4)
_SEQ = const(5)
_MAX_BACKOFF = const(16)


class Node:
    def __init__(self, ccm, kid, counter, outbox, prof, window_bytes=4096, rto_ms=1000, min_rto_ms=100,
                 max_rto_ms=60000, outbox_limit=64):
        self._ccm = ccm
        self.kid = bytes(kid)
        self._counter = counter
        self._outbox = outbox
        self.profile = prof
        self.window_bytes = window_bytes
        self.rto_ms = rto_ms  # current RTO before back-off: initial value until a sample arrives
        self.min_rto_ms = min_rto_ms
        self.max_rto_ms = max_rto_ms
        self.outbox_limit = outbox_limit
        self._inflight = {}  # counter -> entry (see the field constants above)
        self._bytes = 0  # bytes of the in-flight entries not marked lost
        self.srtt = -1  # smoothed RTT (ms), -1 until the first sample
        self.rttvar = 0
        self.min_rtt = -1
        self._backoff = 0  # doublings of the RTO since anything came back
        self._backoff_at = None  # when the last doubling happened
        self._heard_at = None  # when the last verified ACK arrived
        self._seq = 0  # transmissions so far, numbering them
        self._rack_seq = 0  # the latest transmission known delivered (RACK)
        self._rack_rtt = 0  # and its round trip
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
            self.profile, time, model, domain, label, confidence, fingerprint, topk, ext
        )
        counter = self._counter.next()
        sealed = frame.seal(self._ccm, self.kid, counter, plaintext, frame.UPLINK_IV)
        self._outbox.put(counter, sealed)
        self.concluded += 1
        return counter

    # -- sending -------------------------------------------------------------------------

    def rto(self):
        """The retransmission timeout in force now (ms), back-off included."""
        rto = self.rto_ms << self._backoff
        return rto if rto < self.max_rto_ms else self.max_rto_ms

    def _expire(self, now):
        """Mark the frames whose timer ran out as lost; back off if the link was silent."""
        for entry in self._inflight.values():
            if entry[_LOST] or ticks_diff(now, entry[_DEADLINE]) < 0:
                continue
            entry[_LOST] = True
            self._bytes -= len(entry[_FRAME])
            silent = self._heard_at is None or ticks_diff(self._heard_at, entry[_SENT]) < 0
            new_round = self._backoff_at is None or ticks_diff(entry[_SENT], self._backoff_at) >= 0
            if silent and new_round and self._backoff < _MAX_BACKOFF:
                self._backoff += 1
                self._backoff_at = now

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
        that must pace its transmissions."""
        self._expire(now)
        found = self._candidate()
        if found is None:
            return None
        counter, entry = found
        if entry is None:
            entry = [self._outbox.get(counter), now, now, 0, True, 0]
            self._inflight[counter] = entry
        size = len(entry[_FRAME])
        if not self._fits(size):
            if entry[_TIMES] == 0:
                del self._inflight[counter]  # not sent yet: it stays only in the outbox
            return None
        rto = self.rto()
        entry[_SENT] = now
        entry[_DEADLINE] = ticks_add(now, rto + self._jitter(counter, rto))
        entry[_TIMES] += 1
        entry[_LOST] = False
        self._seq += 1
        entry[_SEQ] = self._seq
        self._bytes += size
        self.transmissions += 1
        if entry[_TIMES] > 1:
            self.retransmissions += 1
        return entry[_FRAME]

    def poll(self, now):
        """Every frame to transmit at time now (ms), as a list."""
        out = []
        while True:
            sealed = self.next_frame(now)
            if sealed is None:
                return out
            out.append(sealed)

    def _jitter(self, counter, rto):
        return ((counter * 2654435761) >> 7) % (rto // 8 + 1)

    def next_deadline(self, now):
        """Milliseconds until next_frame() has something to do (0: now), or -1 if nothing
        is in flight or waiting."""
        wait = -1
        for entry in self._inflight.values():
            if entry[_LOST]:
                if self._fits(len(entry[_FRAME])):
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
            if len(data) == frame.MULTI_ACK_SIZE:
                counters = frame.open_multi_ack(self._ccm, self.kid, data)
            else:
                counters = (frame.open_ack(self._ccm, self.kid, data),)
        except QisError as exc:
            return (EVENT_REJECTED, str(exc))
        self._heard_at = now
        self._backoff = 0
        newly = []
        for counter in counters:
            self._settle(counter, now)
            if self._outbox.remove(counter):
                self.acked += 1
                newly.append(counter)
        self._detect_losses()
        if len(data) == frame.MULTI_ACK_SIZE:
            return (EVENT_ACKED_MANY, newly)
        return (EVENT_ACKED, counters[0]) if newly else (EVENT_STALE_ACK, counters[0])

    def _settle(self, counter, now):
        """Take an acknowledged frame out of flight; learn its RTT and its send time."""
        entry = self._inflight.pop(counter, None)
        if entry is None or entry[_TIMES] == 0:
            return
        if not entry[_LOST]:
            self._bytes -= len(entry[_FRAME])
        rtt = ticks_diff(now, entry[_SENT])
        if entry[_TIMES] == 1:
            self._sample(rtt)
        elif self.min_rtt < 0 or rtt < self.min_rtt:
            return  # too soon to be the answer to the last copy: it may answer an earlier one
        if entry[_SEQ] > self._rack_seq:
            self._rack_seq, self._rack_rtt = entry[_SEQ], rtt

    def _sample(self, rtt):
        """RFC 6298 section 2, in integer milliseconds."""
        if rtt < 0:
            return
        if self.srtt < 0:
            self.srtt, self.rttvar = rtt, rtt // 2
        else:
            self.rttvar = (3 * self.rttvar + abs(self.srtt - rtt)) // 4
            self.srtt = (7 * self.srtt + rtt) // 8
        if self.min_rtt < 0 or rtt < self.min_rtt:
            self.min_rtt = rtt
        rto = self.srtt + max(1, 4 * self.rttvar)
        self.rto_ms = self.min_rto_ms if rto < self.min_rto_ms else self.max_rto_ms if rto > self.max_rto_ms else rto

    def _detect_losses(self):
        """RACK: a frame last sent before the latest delivered one is lost once it has
        waited that one's RTT plus the reorder window; bring its timer forward to then."""
        wait = self._rack_rtt + (self.min_rtt // 4 if self.min_rtt > 0 else 0)
        for entry in self._inflight.values():
            if not entry[_LOST] and entry[_TIMES] and entry[_SEQ] < self._rack_seq:
                due = ticks_add(entry[_SENT], wait)
                if ticks_diff(due, entry[_DEADLINE]) < 0:
                    entry[_DEADLINE] = due
