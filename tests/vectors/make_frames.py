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
    doc = {"key": KEY.hex(), "kid": KID.hex(), "outcomes": outcomes, "acks": acks, "multi_acks": multi_acks}
    Path(__file__).with_name("frames.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
