"""Regenerate tests/vectors/records.json: the federation's signed messages (gateway/records.py).

    .venv/bin/python tests/vectors/make_records.py

Ed25519 signatures are deterministic, so a fixed site key gives fixed bytes; both the
query and answer frames of a device are included too. tests/interop/test_records_reference.py
checks every vector with pycose, cbor2 and pycddl, and that the code reproduces it.
"""
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qis.edge import frame
from qis.edge.ccm import CCM
from qis.gateway.records import KIND_ASK, KIND_PLAN, KIND_REPLY, VERSION, record_from_row, seal_record, sign
from qis.gateway.sites import Site

HERE = Path(__file__).resolve().parent
SITE_SEED = bytes(range(32))  # the Ed25519 private key of the vectors' site
PSEUDONYM_SECRET = bytes(range(100, 132))
DEVICE_KEY = bytes(range(16))
DEVICE_KID = bytes.fromhex("a1b2c3d4")
ROWS = [  # (position, device, counter, time, model, domain, label, confidence, fingerprint, profile, confirmed)
    ("outcome, full", (1, "ecg-01", 42, 1764201600, 3, 1, 2, 201, bytes(range(16)), "full", None)),
    ("outcome, compact", (2, "ecg-02", 7, 1764205200, 1, 1, 1, 255, bytes.fromhex("fcca438a"), "compact", None)),
    ("confirmation (corrected)", (1, "ecg-01", 42, 1764201600, 3, 1, 2, 201, bytes(range(16)), "full", 0)),
]


def site() -> Site:
    return Site("clinic-a", Ed25519PrivateKey.from_private_bytes(SITE_SEED), PSEUDONYM_SECRET)


def main() -> None:
    s = site()
    records = []
    for name, row in ROWS:
        record = record_from_row(s, row)
        records.append({"name": name, "payload": record.payload(), "message": seal_record(s, record).hex()})
    for r in records:
        r["payload"] = [v.hex() if isinstance(v, bytes) else v for v in r["payload"]]
    # A whole address (part 0 of 1), and part 3 of 4 of an address in a split shard.
    ask = sign(s, [VERSION, KIND_ASK, [[1, 1, 0, 0xA5, 0, 1], [1, 1, 3, 0x10, 3, 4]]])
    # The first member's plan: shard 1.1.3.1 split in four, every unit's load.
    plan = sign(s, [VERSION, KIND_PLAN, ["clinic-a", "clinic-b"], {"1.1.3.1": 4},
                    {"1.1.0.10": 12, "1.1.3.1/0.4": 30, "1.1.3.1/1.4": 30, "1.1.3.1/2.4": 30, "1.1.3.1/3.4": 30},
                    1764201600])
    reply = sign(s, [VERSION, KIND_REPLY, [{"clinic-a": [5, {0: 4, 2: 1}, [0, 0, 0, 0, 0, 1, 2, 2], {3: {0: 4, 2: 1}},
                                                         1, {0: 1}, {3: [1, 0]}]}, None]])
    ccm = CCM(DEVICE_KEY)
    frames = []
    for prof in (frame.COMPACT, frame.FULL):
        fp = bytes(range(prof.fingerprint_len))
        q = frame.seal(ccm, DEVICE_KID, 9, frame.encode_query(prof, 1764201600, 3, 1, fp, 1), frame.UPLINK_IV)
        a = frame.seal(ccm, DEVICE_KID, 9, frame.encode_answer(prof, frame.ANSWERED, 31, 3, [[0, 200], [2, 40]],
                                                               [4, 191], [[3, 4, 191]]), frame.DOWNLINK_IV)
        frames.append({"profile": prof.name, "query": bytes(q).hex(), "answer": bytes(a).hex()})
    doc = {"description": "the federation's signed messages and a device's query/answer frames; made by "
                          "tests/vectors/make_records.py",
           "site": {"name": s.name, "ed25519_private": SITE_SEED.hex(), "public": s.public.hex(),
                    "pseudonym_secret": PSEUDONYM_SECRET.hex()},
           "device": {"key": DEVICE_KEY.hex(), "kid": DEVICE_KID.hex(), "counter": 9},
           "records": records, "ask": ask.hex(), "reply": reply.hex(), "plan": plan.hex(), "frames": frames}
    (HERE / "records.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
