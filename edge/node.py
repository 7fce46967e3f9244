# The device's send/ack/retransmit state machine, sans-IO: the caller passes in the time
# and the bytes it received, and gets back the frames to transmit and the events.
#
# Rules
# - conclude() takes a counter, seals the frame ONCE and writes it to the outbox before it
#   can be sent; frames are only ever sent from the outbox.
# - At most `window` frames are in flight (sent, not yet acknowledged), oldest first. Each
#   has its own deadline; on expiry it is re-sent and its timeout doubles, up to max_rto_ms,
#   plus a per-frame jitter so devices sharing a medium drift apart.
# - A retransmission re-sends the identical sealed bytes: same counter, nonce, plaintext.
# - A frame leaves the outbox only when an ACK for its counter verifies under the key that
#   sealed it: the device key, or a retired one while outbox frames sealed under it wait
#   (a key rotation, docs/PROTOCOL.md). An ACK for a counter no longer pending is harmless
#   (a duplicate ACK) and ignored.
# - After a reboot the outbox is sent again from its oldest frame.
from . import frame
from .compat import ticks_add, ticks_diff
from .errors import QisError

EVENT_ACKED = "acked"
EVENT_STALE_ACK = "stale-ack"
EVENT_REJECTED = "rejected"


class Node:
    def __init__(self, ccm, kid, counter, outbox, prof, window=4, rto_ms=400, max_rto_ms=8000, outbox_limit=64,
                 retired=()):
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
        self.window = window
        self.rto_ms = rto_ms
        self.max_rto_ms = max_rto_ms
        self.outbox_limit = outbox_limit
        self._inflight = {}  # counter -> [frame bytes, deadline ms, current rto ms]
        # Frames in flight are read from the outbox into these (one per window place,
        # back here when acknowledged): no frame-sized block per transmission.
        self._slots = [bytearray(prof.size) for _ in range(window)]
        self._sealed = bytearray(prof.size)  # conclude() seals here, then writes it to the outbox
        self._plain = bytearray(prof.plaintext_len)  # conclude() pads the plaintext here
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

    def poll(self, now):
        """Frames to transmit at time now (ms): due retransmissions first, then new frames.

        The frames are the node's in-flight slots (REUSED once their ACK arrives): a link
        sends or copies them before it hands the node the next received frame."""
        out = []
        for counter, entry in self._inflight.items():
            if ticks_diff(now, entry[1]) >= 0:
                entry[2] = min(entry[2] * 2, self.max_rto_ms)
                entry[1] = ticks_add(now, entry[2] + self._jitter(counter, entry[2]))
                out.append(entry[0])
                self.retransmissions += 1
        if len(self._inflight) < self.window:
            for counter in self._outbox.pending():
                if len(self._inflight) >= self.window:
                    break
                if counter in self._inflight:
                    continue
                slot = self._slots.pop() if self._slots else None
                sealed = self._outbox.get(counter, slot)
                if slot is not None and sealed is not slot:  # a frame of another size: slot unused
                    self._slots.append(slot)
                self._inflight[counter] = [sealed, ticks_add(now, self.rto_ms + self._jitter(counter, self.rto_ms)), self.rto_ms]
                out.append(sealed)
        self.transmissions += len(out)
        return out

    def _jitter(self, counter, rto):
        return ((counter * 2654435761) >> 7) % (rto // 4 + 1)

    def next_deadline(self, now):
        """Milliseconds until poll() has something to do (0: now), or -1 if nothing is in flight."""
        if len(self._inflight) < self.window and len(self._outbox) > len(self._inflight):
            return 0
        wait = -1
        for entry in self._inflight.values():
            d = ticks_diff(entry[1], now)
            if d < 0:
                d = 0
            if wait < 0 or d < wait:
                wait = d
        return wait

    def receive(self, data):
        """Handle one received frame; returns (event, counter or reason)."""
        try:
            kid = bytes(frame.ack_kid(data))
            ccm = self._keys.get(kid)
            if ccm is None:
                return (EVENT_REJECTED, "ACK is for key id %s, not ours" % kid.hex())
            counter = frame.open_ack(ccm, kid, data)
        except QisError as exc:
            return (EVENT_REJECTED, str(exc))
        entry = self._inflight.pop(counter, None)
        if entry is not None and len(entry[0]) == self.profile.size and len(self._slots) < self.window:
            self._slots.append(entry[0])
        if self._outbox.remove(counter):
            self.acked += 1
            return (EVENT_ACKED, counter)
        return (EVENT_STALE_ACK, counter)
