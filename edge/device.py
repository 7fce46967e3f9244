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
# The link: send(frame), receive(timeout_ms) -> list of whole frames, `closed`.
from .node import EVENT_ACKED

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
        now = clock_ms()
        for sealed in node.poll(now):
            link.send(sealed)
        wait = 0 if concluded < frames and node.can_conclude() else node.next_deadline(now)
        if asker:
            for sealed in asker.poll(now):
                link.send(sealed)
            for q in asker.given_up():
                report("unanswered", counter=q)
            ask_wait = asker.next_deadline(now)
            if ask_wait >= 0 and (wait < 0 or ask_wait < wait):
                wait = ask_wait
        received = link.receive(wait if wait >= 0 else _IDLE_WAIT_MS)
        for data in received:
            if asker and asker.is_answer(data):
                event, detail = asker.receive(data)
                if event == EVENT_ANSWER:
                    report("answer", counter=detail[0], answer=detail[1])
                continue
            event, detail = node.receive(data)
            if event == EVENT_ACKED:
                report("acked", counter=detail)
        if not received and link.closed:
            report("error", reason="link closed")
            return 2
    report("done", concluded=concluded, acked=node.acked, transmissions=node.transmissions,
           retransmissions=node.retransmissions, asked=asker.asked if asker else 0,
           answered=asker.answered if asker else 0)
    return 0
