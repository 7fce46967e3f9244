"""Regenerate tests/vectors/features.json: ecg.features v1 of the first 12 beats of the
MIT-BIH 208 replay, as BeatDetector(360) reports them. Run with the project's Python:

    .venv/bin/python tests/vectors/make_features.py

A change of the features is a new spec version (docs/PROTOCOL.md): the vectors only change
with it.
"""
import json
from array import array
from pathlib import Path

from qis.edge.ecg import beats, features

HERE = Path(__file__).resolve().parent
REPLAY = HERE.parent.parent / "tools" / "data" / "mitbih208.i16"


def main() -> None:
    det = beats.BeatDetector(360)
    out = []
    f = array("b", bytes(features.DIM))
    for x in array("h", REPLAY.read_bytes()):
        beat = det.feed(x)
        if beat is not None and beat[1]:
            r, rr, mean_rr = beat
            features.beat_features(det.samples, det.mask, det.start, det.span, rr, mean_rr, f)
            out.append({"r": r, "rr": rr, "mean_rr": mean_rr, "start": det.start, "span": det.span,
                        "features": list(f)})
            if len(out) == 12:
                break
    doc = {"description": "ecg.features v1 of the first 12 beats (with an RR) of the MIT-BIH 208 replay, "
                          "as BeatDetector(360) reports them; made by tests/vectors/make_features.py",
           "version": features.VERSION, "beats": out}
    (HERE / "features.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
