# ecg.features (the ECG domain's similarity features, spec v1) under pytest and MicroPython:
# the same integers from the same samples on both, whatever model the device runs.
import json
from array import array

from edgetest import load, raises, vector_path

features = load("ecg.features")
beats = load("ecg.beats")
errors = load("errors")

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
REPLAY = _HERE + "/../../tools/data/mitbih208.i16"


def _vectors():
    with open(vector_path("features.json")) as f:
        return json.load(f)


def test_replayed_beats_give_the_golden_features():
    doc = _vectors()
    assert doc["version"] == features.VERSION == 1
    want = doc["beats"]
    det = beats.BeatDetector(360)
    out = array("b", bytes(features.DIM))
    got = []
    buf = array("h", bytes(2 * 360))
    with open(REPLAY, "rb") as f:
        while len(got) < len(want):
            n = f.readinto(buf) // 2
            for i in range(n):
                beat = det.feed(buf[i])
                if beat is not None and beat[1] and len(got) < len(want):
                    r, rr, mean_rr = beat
                    features.beat_features(det.samples, det.mask, det.start, det.span, rr, mean_rr, out)
                    got.append([r, rr, mean_rr, det.start, det.span, list(out)])
    for g, w in zip(got, want):
        assert g == [w["r"], w["rr"], w["mean_rr"], w["start"], w["span"], w["features"]], (g, w)


def test_shape_and_rhythm_features_by_hand():
    out = array("b", bytes(features.DIM))
    flat = array("h", [100] * 150)
    assert list(features.beat_features(flat, -1, 0, 150, 360, 360, out)) == [0] * 16  # no shape, regular
    step = array("h", [200 if i < 75 else 0 for i in range(150)])
    features.beat_features(step, -1, 0, 150, 252, 360, out)
    # mean 100, mean absolute deviation 100: +-16 per segment; segment 7 (70..79) straddles
    assert list(out[:7]) == [16] * 7 and out[7] == 0 and list(out[8:15]) == [-16] * 7
    assert out[15] == ((252 - 360) * 128) // 360  # -39: premature
    features.beat_features(step, -1, 0, 150, 0, 0, out)
    assert out[15] == 0  # no rhythm known yet


def test_a_ring_is_read_across_its_end():
    ring = array("h", [0] * 256)
    for i in range(100):
        ring[(200 + i) & 255] = 3 * i
    plain = array("h", [3 * i for i in range(100)])
    a = list(features.beat_features(ring, 255, 200, 100, 300, 330, array("b", bytes(16))))
    b = list(features.beat_features(plain, -1, 0, 100, 300, 330, array("b", bytes(16))))
    assert a == b and a != [0] * 16


def test_bad_arguments_are_named():
    out = array("b", bytes(features.DIM))
    x = array("h", [0] * 200)
    assert "outside 15..4096" in str(raises(errors.ConfigError, features.beat_features, x, -1, 0, 10, 1, 1, out))
    bad = array("b", bytes(8))
    assert "must hold 16" in str(raises(errors.ConfigError, features.beat_features, x, -1, 0, 100, 1, 1, bad))
    assert "rr" in str(raises(errors.ConfigError, features.beat_features, x, -1, 0, 100, -1, 1, out))
