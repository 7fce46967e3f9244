# Beat detection, RR rule and beat windows on the committed MIT-BIH record 208 replay and
# on synthetic signals whose beats are known exactly. Runs under pytest and MicroPython.
import sys
from array import array

from edgetest import load, raises

beats = load("ecg.beats")
errors = load("errors")

FS = 360
N_SAMPLES = 108000  # 5 minutes at 360 Hz
HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
RECORD = HERE + "/../../tools/data/mitbih208.i16"

_cache = {}


def _record():
    """The 5 minute excerpt of record 208 as array('h') of raw ADC counts."""
    if "x" not in _cache:
        x = array("h", bytes(2 * N_SAMPLES))
        with open(RECORD, "rb") as f:
            got = f.readinto(x)
        assert got == 2 * N_SAMPLES, got
        if sys.byteorder == "big":  # the file is little-endian int16
            x.byteswap()
        _cache["x"] = x
    return _cache["x"]


def _detect(samples, fs=FS, cap=1024):
    """Feed every sample; return the reported beats as parallel arrays.

    Results go into arrays allocated up front: many small survivors scattered over the
    MicroPython heap would fragment it. Keys: r, rr, mean_rr (ints), and per window its
    mean, sample std and the index of its maximum ("top").
    """
    win = array("f", [0.0] * beats.WINDOW)
    det = beats.BeatDetector(fs, win)
    out = {"r": array("i", bytes(4 * cap)), "rr": array("i", bytes(4 * cap)),
           "mean_rr": array("i", bytes(4 * cap)), "top": array("i", bytes(4 * cap)),
           "mean": array("f", bytes(4 * cap)), "std": array("f", bytes(4 * cap))}
    n = 0
    for s in samples:
        b = det.feed(s)
        if b is not None:
            if n == cap:
                raise AssertionError("more than %d beats" % cap)
            out["r"][n], out["rr"][n], out["mean_rr"][n] = b
            out["mean"][n], out["std"][n], out["top"][n] = _stats(win)
            n += 1
    for key in out:
        out[key] = out[key][:n]
    return out


def _stats(win):
    """(mean, sample std, index of the maximum) of a window."""
    n = len(win)
    mean = 0.0
    for v in win:
        mean += v
    mean /= n
    var = 0.0
    top = 0
    for i in range(n):
        var += (win[i] - mean) * (win[i] - mean)
        if win[i] > win[top]:
            top = i
    return mean, (var / (n - 1)) ** 0.5, top


def _record_beats():
    if "beats" not in _cache:
        _cache["beats"] = _detect(_record())
    return _cache["beats"]


def test_record208_file_is_5_minutes_of_11_bit_counts():
    x = _record()
    assert len(x) == N_SAMPLES
    assert 0 <= min(x) and max(x) < 2048  # an 11-bit ADC, baseline 1024
    assert 900 < sum(x) // N_SAMPLES < 1100


def test_record208_beat_count():
    # Record 208 has 2955 annotated beats in 30:06 (about 98 per minute): 5 minutes give
    # about 490. The interop test compares each R peak with an independent numpy detector.
    n = len(_record_beats()["r"])
    assert 465 <= n <= 520, n


def test_record208_rr_intervals_are_physiological():
    got = _record_beats()
    r, rr = got["r"], got["rr"]
    assert rr[0] == 0 and got["mean_rr"][0] == 0  # nothing known before the first beat
    for i in range(1, len(r)):  # R indexes strictly increase and rr is their difference
        assert rr[i] == r[i] - r[i - 1] >= FS // 5, i  # never inside the refractory period
    rrs = sorted(rr[1:])
    inside = [v for v in rrs if FS * 3 // 10 <= v <= FS * 3 // 2]  # 40..200 bpm
    assert len(inside) >= 0.98 * len(rrs), len(inside)
    median = rrs[len(rrs) // 2]
    assert FS * 50 // 100 <= median <= FS * 67 // 100, median  # 90..120 bpm


def test_record208_mean_rr_is_the_mean_of_the_previous_8():
    rr, mean_rr = _record_beats()["rr"], _record_beats()["mean_rr"]
    for i in range(2, len(rr)):
        prev = [min(v, 2 * FS) for v in rr[max(1, i - 8) : i]]  # RR clamped to 2 s
        assert mean_rr[i] == sum(prev) // len(prev), i


def test_record208_premature_fraction():
    # About a third of record 208's beats are PVCs, but many come at nearly the sinus RR
    # (see the interop test); the RR rule flags a clear minority of beats as premature.
    got = _record_beats()
    n = len(got["r"])
    premature = 0
    for i in range(n):
        premature += beats.classify_rr(got["rr"][i], got["mean_rr"][i])[0]
    assert 0.05 * n <= premature <= 0.4 * n, premature


def test_record208_windows_are_z_normalised_with_r_early():
    # A window spans the mean RR from just before the R peak, so its maximum is the R peak
    # (sample 3) unless the next beat comes early enough to fall inside the window too.
    got = _record_beats()
    rr, mean_rr, top = got["rr"], got["mean_rr"], got["top"]
    alone = early = 0
    for i in range(len(rr)):
        assert abs(got["mean"][i]) < 1e-3 and abs(got["std"][i] - 1.0) < 1e-3, i
        following = rr[i + 1] if i + 1 < len(rr) else 0
        if 0 < mean_rr[i] <= following:
            alone += 1
            early += top[i] <= 6
    assert alone >= 150 and early >= 0.95 * alone, (early, alone)


def _pulse_train(apexes, n, base=1024, height=300, half=7):
    """Baseline with triangular QRS-like pulses (15 samples, 42 ms wide) at `apexes`."""
    x = array("h", bytes(2 * n))
    for i in range(n):
        x[i] = base
    for a in apexes:
        for k in range(-half, half + 1):
            x[a + k] = base + height * (half - abs(k)) // half
    return x


def test_pulse_train_gives_exactly_its_beats_and_one_premature():
    period = 288  # 75 bpm
    shift = (period * 4) // 10
    apexes = [150 + period * k for k in range(40)]
    early = 20
    apexes[early] -= shift  # 0.6 x the RR: a premature beat, then a compensatory pause
    got = _detect(_pulse_train(apexes, apexes[-1] + 2 * FS))
    learned = [a for a in apexes if a >= 2 * FS]  # the first 2 s only set the levels
    assert list(got["r"]) == learned
    premature = []
    for i in range(len(learned)):
        label, conf = beats.classify_rr(got["rr"][i], got["mean_rr"][i])
        if label:
            premature.append((got["r"][i], conf))
    assert premature == [(apexes[early], 255)]  # ratio 0.6: well past the 0.85 cut
    i = learned.index(apexes[early])
    assert got["rr"][i] == period - shift and got["mean_rr"][i] == period
    assert got["rr"][i + 1] == period + shift
    assert beats.classify_rr(got["rr"][i + 1], got["mean_rr"][i + 1])[0] == 0
    assert list(got["top"]) == [3] * len(learned)  # R apex at window sample 3, as in ECG5000


def test_flat_line_gives_no_beats():
    for level in (1024, 0):
        x = array("h", bytes(2 * 10 * FS))
        for i in range(len(x)):
            x[i] = level
        assert len(_detect(x)["r"]) == 0


def test_saturated_input_does_not_crash():
    # Out-of-range samples are clamped to int16; a rail-to-rail square wave and clipped
    # ECG still run through, and whatever is reported keeps the refractory period.
    x = array("i", bytes(4 * 10 * FS))
    for i in range(len(x)):
        x[i] = 10 ** 6 if (i // 50) % 2 else -(10 ** 6)
    got = _detect(x)
    for i in range(1, len(got["r"])):
        assert got["rr"][i] >= FS // 5
        assert got["std"][i] == got["std"][i]  # not NaN
    clipped = _record()[: 30 * FS]
    for i in range(len(clipped)):
        clipped[i] = min(max(clipped[i], 900), 1100)
    got = _detect(clipped)
    assert 30 <= len(got["r"]) <= 60, len(got["r"])  # about 49 beats in these 30 s
    for i in range(1, len(got["r"])):
        assert got["rr"][i] >= FS // 5


def test_detector_rejects_bad_configuration():
    exc = raises(errors.ConfigError, beats.BeatDetector, 50)
    assert "fs" in str(exc)
    raises(errors.ConfigError, beats.BeatDetector, 360.0)
    exc = raises(errors.ConfigError, beats.BeatDetector, 360, array("f", [0.0] * 139))
    assert "140" in str(exc)


def test_reset_starts_over():
    x = _pulse_train([150 + 288 * k for k in range(12)], 12 * 288 + 2 * FS)
    det = beats.BeatDetector(FS)
    first = [b for b in (det.feed(s) for s in x) if b is not None]
    det.reset()
    again = [b for b in (det.feed(s) for s in x) if b is not None]
    assert first == again and len(first) >= 8


def test_classify_rr_rule():
    assert beats.classify_rr(150, 200) == (1, 170)  # ratio 0.75: 0.10 below the cut
    assert beats.classify_rr(170, 200) == (0, 0)  # exactly at the cut 0.85
    assert beats.classify_rr(169, 200) == (1, 8)  # 0.845: 5 per mille x 255 / 150
    assert beats.classify_rr(200, 200) == (0, 255)  # 0.15 above the cut: full confidence
    assert beats.classify_rr(100, 200) == (1, 255)
    assert beats.classify_rr(0, 200) == (0, 0)  # first beat: no RR yet
    assert beats.classify_rr(200, 0) == (0, 0)  # no mean yet
    exc = raises(errors.ConfigError, beats.classify_rr, -1, 200)
    assert "rr" in str(exc)
    raises(errors.ConfigError, beats.classify_rr, 100, -5)


