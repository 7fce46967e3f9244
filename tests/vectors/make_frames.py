"""Regenerate tests/vectors/frames.json: python tests/vectors/make_frames.py

The vectors are sealed by the edge code; tests/interop/test_frames_reference.py checks
every one of them independently with cryptography, cbor2, pycose and pycddl, and
tests/edge/test_frame.py checks that both interpreters reproduce them byte for byte.
"""
import json
from pathlib import Path

from qis.edge import frame
from qis.edge.ccm import CCM

KEY = bytes(range(16))
KID = bytes.fromhex("a1b2c3d4")
CASES = [
    ("compact, small values", "compact", 0, dict(time=1764201600, model=1, domain=1, label=0, confidence=17, fingerprint="fcca438a", topk=[])),
    ("compact, worst-case sizes", "compact", 0xFFFFFFFF, dict(time=0xFFFFFFFF, model=255, domain=255, label=255, confidence=255, fingerprint="ffffffff", topk=[])),
    ("full, top-3", "full", 1, dict(time=1764201600, model=3, domain=1, label=2, confidence=201, fingerprint="fce2ca8a43fc8acf6061e08f4b91a7ca", topk=[[2, 201], [0, 40], [4, 14]])),
    ("full, large counter and ids", "full", 0x01020304, dict(time=1, model=65535, domain=65535, label=65535, confidence=0, fingerprint="00" * 16, topk=[[65535, 255]] * 5)),
]

# Queries (type 3): (name, profile, counter, time, model, domain, probe, fingerprint hex).
QUERY_CASES = [
    ("compact, exact buckets", "compact", 7, 1764201600, 1, 1, 0, "fcca438a"),
    ("full, multi-probe, highest counter", "full", 0xFFFFFFFF, 1764201600, 3, 1, 1, "fce2ca8a43fc8acf6061e08f4b91a7ca"),
]
# Answers (type 5): (name, profile, counter of the query, status, outcomes, sites, labels, confirmed, models).
ANSWER_CASES = [
    ("compact, answered", "compact", 7, 0, 42, 3, [[2, 191], [0, 64]], [5, 204], []),
    ("compact, too few, counts capped", "compact", 8, 1, 300, 2, [], [0, 0], []),
    ("full, answered with models", "full", 0xFFFFFFFF, 0, 1000, 12, [[2, 150], [0, 60], [4, 30], [1, 15]], [40, 230],
     [[3, 25, 240], [2, 10, 200], [1, 5, 128]]),
    ("full, partial", "full", 9, 3, 6, 2, [[1, 255]], [0, 0], []),
]

# Multi-ACKs (type 4): one counter; the lowest and the highest counter; a gap; the whole span.
MULTI_ACK_CASES = [[0], [0xFFFFFFFF], [38, 9, 8, 7], [100, 68], list(range(1000, 1033))]


def main() -> None:
    ccm = CCM(KEY)
    outcomes = []
    for name, prof, counter, f in CASES:
        p = frame.profile(prof)
        pt = frame.encode_outcome(p, f["time"], f["model"], f["domain"], f["label"], f["confidence"],
                                  bytes.fromhex(f["fingerprint"]), f["topk"])
        sealed = frame.seal(ccm, KID, counter, pt, frame.UPLINK_IV)
        outcomes.append({"name": name, "profile": prof, "counter": counter, "fields": f,
                         "plaintext": pt.hex(), "frame": sealed.hex()})
    acks = [{"counter": c, "frame": frame.seal_ack(ccm, KID, c).hex()} for c in (0, 7, 0xFFFFFFFF)]
    multi_acks = [{"counters": sorted(cs, reverse=True), "frame": frame.seal_multi_ack(ccm, KID, cs).hex()}
                  for cs in MULTI_ACK_CASES]
    queries = []
    for name, prof, counter, time, model, domain, probe, fp in QUERY_CASES:
        pt = frame.encode_query(frame.profile(prof), time, model, domain, bytes.fromhex(fp), probe)
        queries.append({"name": name, "profile": prof, "counter": counter,
                        "fields": {"time": time, "model": model, "domain": domain, "probe": probe, "fingerprint": fp},
                        "plaintext": bytes(pt).hex(), "frame": frame.seal(ccm, KID, counter, pt, frame.UPLINK_IV).hex()})
    answers = []
    for name, prof, counter, status, n_outcomes, sites, labels, confirmed, models in ANSWER_CASES:
        pt = frame.encode_answer(frame.profile(prof), status, n_outcomes, sites, labels, confirmed, models)
        answers.append({"name": name, "profile": prof, "counter": counter,
                        "fields": {"status": status, "outcomes": n_outcomes, "sites": sites, "labels": labels,
                                   "confirmed": confirmed, "models": models},
                        "plaintext": bytes(pt).hex(), "frame": frame.seal(ccm, KID, counter, pt, frame.DOWNLINK_IV).hex()})
    doc = {"key": KEY.hex(), "kid": KID.hex(), "outcomes": outcomes, "acks": acks, "multi_acks": multi_acks,
           "queries": queries, "answers": answers}
    Path(__file__).with_name("frames.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
