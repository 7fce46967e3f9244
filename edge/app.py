# The device main loop, shared by every board: samples -> beat -> conclusion -> frame ->
# link, and ACKs back. The board supplies the sample source, the link, the clocks and a
# report function; everything else is the protocol core.
#
# Rules: concluding never waits on the link (frames go to the outbox first); when the
# outbox is full the loop stops taking samples until ACKs free room; the loop ends when
# the requested frames are concluded AND every frame in the outbox is acknowledged.
from array import array

from . import beats, stream
from .node import EVENT_ACKED

_SAMPLES_PER_TURN = 720  # samples read between two services of the link (2 s at 360 Hz)


def run(node, link, samples, model, simhash, frames, domain, clock_ms, time_s, report):
    """Conclude `frames` beats from `samples` and return when all are acknowledged.

    Returns 0 on success, 1 if the sample source ran dry, 2 if the link closed.
    """
    window = array("f", bytes(4 * beats.WINDOW))
    detector = beats.BeatDetector(360, window)
    decoder = stream.Decoder(64)  # the device only receives 32-byte ACKs
    concluded = 0
    report("boot", pending=node.pending(), profile=node.profile.name, model=model.model_id)
    while concluded < frames or node.pending():
        if concluded < frames and node.can_conclude():
            for _ in range(_SAMPLES_PER_TURN):
                sample = next(samples, None)
                if sample is None:
                    report("error", reason="sample source ended")
                    return 1
                beat = detector.feed(sample)
                if beat is not None and beat[1]:  # the first beat has no RR interval yet
                    r, rr, mean_rr = beat
                    label, confidence, topk, emb = model.conclude(window, rr, mean_rr)
                    counter = node.conclude(time_s(), model.model_id, domain, label, confidence,
                                            simhash.fingerprint(emb), topk[: node.profile.topk_max])
                    concluded += 1
                    report("concluded", counter=counter, label=label, confidence=confidence, r=r)
                    break
        now = clock_ms()
        for sealed in node.poll(now):
            link.write(stream.encode(sealed))
        wait = 0 if concluded < frames and node.can_conclude() else node.next_deadline(now)
        data = link.read(wait if wait >= 0 else 100)
        if data:
            for kind, value in decoder.feed(data):
                if kind != "frame":
                    continue
                event, detail = node.receive(value)
                if event == EVENT_ACKED:
                    report("acked", counter=detail)
        elif link.closed:
            report("error", reason="link closed")
            return 2
    report("done", concluded=concluded, acked=node.acked, transmissions=node.transmissions,
           retransmissions=node.retransmissions)
    return 0
