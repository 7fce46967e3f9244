# The ECG application (ecg.app) under pytest and MicroPython: devices running different
# models see the same beats at the same fingerprints, so they meet at the same addresses.
from array import array

from edgetest import load

app_mod = load("ecg.app")
conclude = load("ecg.conclude")
registry = load("ecg.registry")
frame = load("frame")
fingerprint = load("fingerprint")

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
REPLAY = _HERE + "/../../tools/data/mitbih208.i16"
MODELS = _HERE + "/../../models/"


def _replay():
    buf = array("h", bytes(2 * 512))
    with open(REPLAY, "rb") as f:
        while True:
            n = f.readinto(buf) // 2
            if n == 0:
                return
            for i in range(n):
                yield buf[i]


def _observe(model, prof, n):
    app = app_mod.EcgApp(_replay(), model, prof)
    seen = []
    while len(seen) < n:
        got = app.observe()
        if got is not None:
            label, confidence, fp, topk, details = got
            seen.append((details["r"], label, bytes(fp)))
    return seen


def test_different_models_put_the_same_beats_at_the_same_addresses():
    rule = _observe(conclude.RuleModel(), frame.FULL, 25)
    cnn = _observe(conclude.QemModel(MODELS + "ecg_cnn/model.qem", registry.MODEL_ECG_CNN), frame.FULL, 25)
    mlp = _observe(conclude.QemModel(MODELS + "ecg_mlp/model.qem", registry.MODEL_ECG_MLP), frame.FULL, 25)
    assert [r for r, _, _ in rule] == [r for r, _, _ in cnn] == [r for r, _, _ in mlp]  # the same beats
    assert [fp for _, _, fp in rule] == [fp for _, _, fp in cnn] == [fp for _, _, fp in mlp]
    # A compact device's addresses are the first four of a full device's.
    compact = _observe(conclude.RuleModel(), frame.COMPACT, 25)
    for (_, _, small), (_, _, big) in zip(compact, rule):
        assert fingerprint.buckets(small, 4, 8) == fingerprint.buckets(big, 8, 16)[:4]


def test_a_source_that_runs_dry_ends_the_application():
    app = app_mod.EcgApp(iter([0] * 100), conclude.RuleModel(), frame.COMPACT)
    assert app.observe() is None and app.ended
