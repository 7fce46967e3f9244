# The generic device loop every board calls: observations -> conclusions -> frames ->
# link, and ACKs back; optionally questions about similar cases, and their answers.
# The board supplies the link, the application (what observes and concludes), the clocks
# and a report function; everything else is the protocol core.
#
# Rules: concluding never waits on the link (frames go to the outbox first); when the
# outbox is full the loop stops observing until ACKs free room; every ask_every-th
# conclusion is followed by a query with the same fingerprint (when an asker is given and
# fewer than its limit are pending); the loop ends when the requested conclusions are made,
# every frame in the outbox is acknowledged and every query is answered or given up.
#
# The application: `model_id`, `domain`, `ended`, and observe() -> None or
# (label, confidence, fingerprint, topk, details), details a dict for the report.
# The link: send(frame), receive(timeout_ms) -> list of whole frames, `closed`, and
# send_delay_ms() -> how long until it can take the next frame (0: now; a radio under a
# duty cycle, or a broker connection being re-established, make the loop wait). Frames are
# handed over one at a time while the link can take them, so the node's send times (and
# so its RTT samples) are when the link really sent them.
from .node import EVENT_ACKED, EVENT_ACKED_MANY

EVENT_ANSWER = "answer"  # what edge.query reports; defined here so a device that never asks never loads it

_IDLE_WAIT_MS = 100  # how long to wait on the link when nothing is in flight


def run(node, link, app, frames, clock_ms, time_s, report, asker=None, ask_every=0):
    """Make `frames` conclusions and return when all are acknowledged (and all queries
    answered or given up).

    Returns 0 on success, 1 if the application's source ran dry, 2 if the link closed.
    """
    concluded = 0
    report("boot", pending=node.pending(), profile=node.profile.name, model=app.model_id)
    while concluded < frames or node.pending() or (asker and asker.pending()):
        if concluded < frames and node.can_conclude():
            seen = app.observe()
            if seen is not None:
                label, confidence, fingerprint, topk, details = seen
                counter = node.conclude(time_s(), app.model_id, app.domain, label, confidence, fingerprint,
                                        topk[: node.profile.topk_max])
                concluded += 1
                report("concluded", counter=counter, label=label, confidence=confidence, **details)
                if asker and ask_every and concluded % ask_every == 0 and asker.can_ask():
                    q = asker.ask(clock_ms(), time_s(), app.model_id, app.domain, fingerprint)
                    report("asked", counter=q, about=counter)
            elif app.ended:
                report("error", reason="sample source ended")
                return 1
        delay = link.send_delay_ms()
        while delay == 0:
            # ACKs that came in while the loop was busy (observing, or blocked writing a
            # frame) are taken first, so that no timer runs out on an answer already here.
            _deliver(node, link.receive(0), clock_ms, report, asker)
            now = clock_ms()
            sealed = node.next_frame(now)
            if sealed is None:
                break
            link.send(sealed)
            delay = link.send_delay_ms()
        now = clock_ms()
        wait = 0 if concluded < frames and node.can_conclude() else node.next_deadline(now)
        if asker:
            # Queries share the link's budget: they go out only when it can take a frame now.
            if link.send_delay_ms() == 0:
                for sealed in asker.poll(now):
                    link.send(sealed)
            for q in asker.given_up():
                report("unanswered", counter=q)
            ask_wait = asker.next_deadline(now)
            if ask_wait >= 0 and (wait < 0 or ask_wait < wait):
                wait = ask_wait
        if wait == 0 and delay > 0 and not (concluded < frames and node.can_conclude()):
            wait = delay  # a frame is ready but the link is not
        received = link.receive(wait if wait >= 0 else _IDLE_WAIT_MS)
        _deliver(node, received, clock_ms, report, asker)
        if not received and link.closed:
            report("error", reason="link closed")
            return 2
    report("done", concluded=concluded, acked=node.acked, transmissions=node.transmissions,
           retransmissions=node.retransmissions, asked=asker.asked if asker else 0,
           answered=asker.answered if asker else 0)
    return 0


def _deliver(node, received, clock_ms, report, asker):
    for data in received:
        if asker and asker.is_answer(data):
            event, detail = asker.receive(data)
            if event == EVENT_ANSWER:
                report("answer", counter=detail[0], answer=detail[1])
            continue
        event, detail = node.receive(data, clock_ms())
        if event == EVENT_ACKED:
            report("acked", counter=detail)
        elif event == EVENT_ACKED_MANY:
            for counter in detail:
                report("acked", counter=counter)
