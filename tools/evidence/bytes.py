"""`qis evidence bytes`: bytes per participant per cycle, outcome routing against FedAvg.

Rules: every size of ours is measured on bytes the project's own code makes (edge.frame
seals the outcome and the ACK, edge.stream frames them for a serial line, gateway.records
signs the forwarded record); the one constant that is not ours is LoRaWAN's MAC framing
(13 bytes: MHDR 1, FHDR 7 without options, FPort 1, MIC 4; LoRaWAN 1.0.x spec). FedAvg is
2 x parameters x bytes per weight per client per round (the update down and up, no
compression or framing: a floor), parameters counted from each reference model's ONNX
initializers. A cycle is one outcome for us and one round for FedAvg.
"""
from __future__ import annotations

import argparse

import numpy as np

from qis.edge import frame, stream
from qis.edge.ccm import CCM
from qis.edge.frame import PROFILES
from qis.gateway.records import seal_record

from ..bench.frames import FIELDS, KEY, KID
from . import common

NAME = "bytes"
LORAWAN_MAC = 13
REPLICAS = 2  # owners per shard (gateway.federation.Settings)
MODELS = ("ecg_mlp", "ecg_cnn", "ecg_dscnn")
SEED_FRAME = 512
SEED_FEDAVG = (50e6, 500e6)


def onnx_params(model: str) -> int:
    """Parameters of a reference model: the elements of its float ONNX's initializers."""
    import onnx
    graph = onnx.load(str(common.ROOT / "models" / model / "model.onnx")).graph
    return int(sum(int(np.prod(t.dims)) for t in graph.initializer))


def ours() -> dict[str, dict[str, int]]:
    """Measured sizes per profile: frame, ACK, wire forms, record, query and answer."""
    ccm = CCM(KEY)
    site = common.site("site-a")
    out = {}
    for name, prof in PROFILES.items():
        t, model, domain, label, conf, fprint, topk = FIELDS[name]
        sealed = bytes(frame.seal(ccm, KID, 7, frame.encode_outcome(prof, t, model, domain, label, conf, fprint,
                                                                    topk), frame.UPLINK_IV))
        ack = bytes(frame.seal_ack(ccm, KID, 7))
        query = bytes(frame.seal(ccm, KID, 8, frame.encode_query(prof, t, model, domain, fprint), frame.UPLINK_IV))
        answer = bytes(frame.seal(ccm, KID, 8, frame.encode_answer(prof, 0, 12, 3, [[2, 200], [0, 55]], [4, 230],
                                                                   [[3, 4, 230]]), frame.DOWNLINK_IV))
        rec = seal_record(site, common.record("site-a", 1, label, conf >> 5, fprint, name, model))
        out[name] = {"frame": len(sealed), "ack": len(ack), "frame_serial": len(stream.encode(sealed)),
                     "ack_serial": len(stream.encode(ack)), "frame_lorawan": len(sealed) + LORAWAN_MAC,
                     "ack_lorawan": len(ack) + LORAWAN_MAC, "record": len(rec), "tables": prof.fingerprint_tables,
                     "query": len(query), "answer": len(answer)}
    return out


def rows() -> tuple[list[tuple[str, float, str]], dict]:
    """(what, bytes per participant per cycle, note) rows, and the raw numbers."""
    o = ours()
    c, f = o["compact"], o["full"]
    r = []
    r.append(("outcome frame, compact (sealed)", c["frame"], "one LoRaWAN EU868 DR0 payload"))
    r.append(("  + ACK, on LoRaWAN (both with MAC framing)", c["frame_lorawan"] + c["ack_lorawan"],
              f"{c['frame_lorawan']} up + {c['ack_lorawan']} down"))
    r.append(("outcome frame, full (sealed)", f["frame"], "serial, MQTT"))
    r.append(("  + ACK, on a serial line (COBS + CRC records)", f["frame_serial"] + f["ack_serial"],
              f"{f['frame_serial']} up + {f['ack_serial']} down"))
    for name, p in (("compact", c), ("full", f)):
        pub = p["tables"] * p["record"]
        r.append((f"forwarded records, {name} ({p['tables']} tables x {p['record']} B signed)", pub,
                  f"gateway to bus; the {REPLICAS} owners then read {REPLICAS * pub} B"))
    r.append(("query + answer, full", f["query"] + f["answer"], "asking similar cases (optional)"))
    r.append(("seed's figure for an outcome packet", SEED_FRAME, "as claimed"))
    params = {m: onnx_params(m) for m in MODELS}
    for m in MODELS:
        for dtype, width in (("float32", 4), ("int8", 1)):
            r.append((f"FedAvg round, {m} ({params[m]:,} parameters, {dtype})", 2 * params[m] * width,
                      "update down + up, per client"))
    r.append(("seed's figure for a FedAvg round", SEED_FEDAVG[0], "50 MB (low end) to 500 MB"))
    r.append(("seed's figure for a FedAvg round (high end)", SEED_FEDAVG[1], ""))
    return r, {"ours": o, "params": params}


def render(r: list[tuple[str, float, str]], raw: dict) -> str:
    f = raw["ours"]["full"]
    device_full = f["frame_serial"] + f["ack_serial"]
    body = common.table(["what moves, per participant per cycle", "bytes", "x full frame on the wire", "note"],
                        [(what, f"{n:,.0f}", f"{n / device_full:,.2f}", note) for what, n, note in r], "lrrl")
    mlp = 2 * raw["params"]["ecg_mlp"] * 4
    lo, hi = min(raw["params"].values()), max(raw["params"].values())
    gw_full = f["tables"] * f["record"] * (1 + REPLICAS)
    text = f"""### 1. Bytes per participant per cycle

Command: `qis evidence bytes` (tools/evidence/bytes.py). Sizes are measured on the bytes the
project's code makes; FedAvg is the floor 2 x parameters x bytes per weight.

![bytes per cycle](evidence/bytes.png)

{body}

Break-even: one float32 FedAvg round of the largest reference model (ecg_mlp, {mlp:,} B) moves
as many bytes as {mlp / device_full:,.0f} full outcomes on a serial line with their ACKs, or
{mlp / (device_full + gw_full):,.0f} outcomes counting the gateway's forwarding too
({gw_full:,} B: {f['tables']} signed records published, read by {REPLICAS} owners). Our reference
models are tiny ({lo:,} to {hi:,} parameters), so the seed's "50 to 500 MB" does not apply to
them: for these models a float32 FedAvg round is {2 * lo * 4:,} to {mlp:,} B, {2 * lo * 4 / device_full:,.1f}x
to {mlp / device_full:,.1f}x one full outcome with its ACK (and an int8 round of the smallest model,
{2 * lo:,} B, is {2 * lo / device_full:,.1f}x), not the seed's 100,000x to 1,000,000x. Per cycle, outcome routing wins on
bytes by {2 * lo / device_full:,.1f}x to {mlp / device_full:,.1f}x at the device with these models (by a factor that grows with
the model: 2 x parameters x bytes per weight against a fixed frame), and a site that sends
more outcomes per FedAvg round than the break-even above moves more bytes than FedAvg would."""
    return text


def plot(r: list[tuple[str, float, str]]):
    plt = common.figure()
    fig, ax = plt.subplots(figsize=(8, 5))
    labels = [w.strip().replace("  + ", "+ ") for w, _, _ in r]
    values = [n for _, n, _ in r]
    colors = ["tab:red" if "FedAvg" in w else "tab:gray" if "seed" in w else "tab:blue" for w, _, _ in r]
    ax.barh(range(len(r)), values, color=colors)
    ax.set_yticks(range(len(r)), [s[:60] for s in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("bytes per participant per cycle (log)")
    ax.set_title("Outcome routing (blue) vs FedAvg (red) vs the seed's figures (gray)")
    return fig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    common.log(NAME, "measuring frames, records and model sizes")
    r, raw = rows()
    common.publish(NAME, render(r, raw), plot(r), args)
    return 0
