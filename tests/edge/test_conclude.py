from array import array

from edgetest import load, raises

beats = load("ecg.beats")
conclude = load("ecg.conclude")
registry = load("ecg.registry")
errors = load("errors")

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
REPLAY = _HERE + "/../../tools/data/mitbih208.i16"
CNN = _HERE + "/../../models/ecg_cnn/model.qem"


def _first_beats(n):
    """(window copy, rr, mean_rr) of the first n beats of the replay that have an RR."""
    window = array("f", bytes(4 * beats.WINDOW))
    det = beats.BeatDetector(360, window)
    buf = array("h", bytes(2 * 360))
    out = []
    with open(REPLAY, "rb") as f:
        while len(out) < n:
            got = f.readinto(buf) // 2
            for i in range(got):
                b = det.feed(buf[i])
                if b is not None and b[1]:
                    out.append((array("f", window), b[1], b[2]))
    return out[:n]


def test_rule_model_follows_rr():
    m = conclude.RuleModel()
    window = array("f", bytes(4 * beats.WINDOW))
    label, conf, topk = m.conclude(window, 250, 360)  # 0.69 x mean RR: premature
    assert label == 1 and conf > 100
    assert topk[0] == [1, conf] and topk[1] == [0, 255 - conf]
    assert m.conclude(window, 360, 360)[0] == 0


def test_cnn_concludes_on_replayed_beats():
    m = conclude.QemModel(CNN, registry.MODEL_ECG_CNN)
    assert m.model_id == 3
    labels = []
    for window, rr, mean_rr in _first_beats(12):
        label, conf, topk = m.conclude(window, rr, mean_rr)
        assert 0 <= label < 5 and 0 <= conf <= 255
        assert topk[0] == [label, conf] and len(topk) == 5
        assert [s for _, s in topk] == sorted([s for _, s in topk], reverse=True)
        labels.append(label)
    assert 0 in labels  # most beats of record 208 are normal


def test_cnn_input_polarity_is_ecg5000s():
    # ECG5000 beats are inverted relative to MLII: fed as recorded, the CNN sees
    # out-of-distribution beats and calls (nearly) all of them normal.
    inverted = conclude.QemModel(CNN, 3)
    as_recorded = conclude.QemModel(CNN, 3, invert=False)
    sample = _first_beats(40)
    abnormal_inverted = sum(1 for w, rr, m in sample if inverted.conclude(w, rr, m)[0] != 0)
    abnormal_as_recorded = sum(1 for w, rr, m in sample if as_recorded.conclude(w, rr, m)[0] != 0)
    assert abnormal_inverted > abnormal_as_recorded


def test_a_truncated_model_file_is_refused():
    path = "/tmp/qis-truncated.qem"
    with open(CNN, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    raises(errors.ModelError, conclude.QemModel, path, 3)
