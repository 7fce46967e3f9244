# The device's questions, sans-IO: "what did cases like this one conclude, and how often
# was that confirmed?" The caller passes in the time and the frames it received, and gets
# back the frames to send and the answers.
#
# Rules
# - ask() takes a counter (a nonce) from the same persistent counter as the outcomes and
#   seals the query once; a retransmission re-sends the identical bytes.
# - Queries live in RAM only: an unanswered question is not worth flash. After a reboot
#   it is not asked again; nothing acknowledged depends on it.
# - A query is re-sent until its answer verifies, at most `tries` times, the wait doubling
#   from rto_ms up to max_rto_ms (an answer may wait for a busy gateway, or for a LoRa
#   gateway's downlink budget: asking faster would not make it come sooner); then it is
#   given up (EVENT_UNANSWERED), so the device is never left waiting in silence. With the
#   defaults that is after about a minute.
# - At most `limit` queries are pending; ask() refuses more (the caller asks later).
from . import frame
from .compat import ticks_add, ticks_diff
from .device import EVENT_ANSWER  # noqa: F401 - the device loop's name for it
from .errors import QisError

EVENT_UNANSWERED = "unanswered"
EVENT_REJECTED = "rejected"
EVENT_STALE = "stale-answer"


class Asker:
    def __init__(self, ccm, kid, counter, prof, rto_ms=2000, tries=6, limit=2, max_rto_ms=16000):
        self._ccm = ccm
        self.kid = bytes(kid)
        self._counter = counter
        self.profile = prof
        self.rto_ms = rto_ms
        self.max_rto_ms = max_rto_ms
        self.tries = tries
        self.limit = limit
        self._pending = {}  # counter -> [sealed frame, deadline ms, tries left]
        self._given_up = []  # counters given up since the last poll
        self.asked = 0
        self.answered = 0
        self.unanswered = 0

    def can_ask(self):
        return len(self._pending) < self.limit

    def pending(self):
        return len(self._pending)

    def ask(self, now, time, model, domain, fingerprint, probe=0):
        """Seal one query (sent by the next poll) and return its counter."""
        if not self.can_ask():
            raise QisError("%d queries are already pending" % len(self._pending))
        plaintext = frame.encode_query(self.profile, time, model, domain, fingerprint, probe)
        counter = self._counter.next()
        sealed = frame.seal(self._ccm, self.kid, counter, plaintext, frame.UPLINK_IV)
        self._pending[counter] = [sealed, now, self.tries]
        self.asked += 1
        return counter

    def poll(self, now):
        """Queries to (re)send at time now (ms)."""
        out = []
        for counter, entry in self._pending.items():
            if ticks_diff(now, entry[1]) >= 0:
                if entry[2] == 0:
                    if counter not in self._given_up:  # once, however often poll() runs before given_up()
                        self._given_up.append(counter)
                    continue
                entry[2] -= 1
                wait = self.rto_ms << (self.tries - entry[2] - 1)  # doubles with every copy sent
                entry[1] = ticks_add(now, wait if wait < self.max_rto_ms else self.max_rto_ms)
                out.append(entry[0])
        return out

    def given_up(self):
        """Counters of the queries given up since the last call (EVENT_UNANSWERED each)."""
        done = self._given_up
        self._given_up = []
        for counter in done:
            self._pending.pop(counter, None)
            self.unanswered += 1
        return done

    def next_deadline(self, now):
        """Milliseconds until poll() has something to do, or -1 if nothing is pending."""
        wait = -1
        for entry in self._pending.values():
            d = ticks_diff(entry[1], now)
            d = 0 if d < 0 else d
            if wait < 0 or d < wait:
                wait = d
        return wait

    def is_answer(self, data):
        return len(data) == self.profile.answer_size

    def receive(self, data):
        """Handle one answer frame: (EVENT_ANSWER, (counter, answer)), or a rejection."""
        try:
            counter, answer = frame.open_answer(self._ccm, self.kid, data, self.profile)
        except QisError as exc:
            return (EVENT_REJECTED, str(exc))
        if self._pending.pop(counter, None) is None:
            return (EVENT_STALE, counter)
        self.answered += 1
        return (EVENT_ANSWER, (counter, answer))
