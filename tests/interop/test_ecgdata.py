"""The committed MIT-BIH 208 replay, and the edge beat detector against independent checks.

No test downloads the scipy wheel: `qis data mitbih --check` does that by hand.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mp import run_mp_code
from qis.edge.ecg import beats
from qis.tools.datasets import mitbih as ecgdata
from qis.tools.datasets.pinned import DatasetError

FS = 360
TOL = FS * 50 // 1000  # 50 ms


def _detect(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R indexes, rr, mean_rr) of the edge detector over the whole signal."""
    det = beats.BeatDetector(FS)
    found = [b for b in (det.feed(int(s)) for s in x) if b is not None]
    r, rr, mean_rr = (np.array(col) for col in zip(*found))
    return r, rr, mean_rr


def _reference_peaks(x: np.ndarray) -> np.ndarray:
    """R peaks by an offline method unlike the streaming one: zero-phase FFT band-pass
    (5-15 Hz), |band-pass| local maxima above 40 % of each 10 s block's 99th percentile,
    the largest kept at least 250 ms apart, then the raw maximum within 83 ms (the same R
    convention as the device: apex of the main positive deflection in lead MLII)."""
    xf = x.astype(float)
    f = np.fft.rfftfreq(xf.size, 1 / FS)
    spec = np.fft.rfft(xf - xf.mean())
    spec[(f < 5) | (f > 15)] = 0
    env = np.abs(np.fft.irfft(spec, xf.size))
    thr = np.empty_like(env)
    for s in range(0, xf.size, 10 * FS):
        thr[s:s + 10 * FS] = 0.4 * np.percentile(env[s:s + 10 * FS], 99)
    inner = env[1:-1]
    cand = np.where((inner > env[:-2]) & (inner >= env[2:]) & (inner > thr[1:-1]))[0] + 1
    taken = np.zeros(xf.size, bool)
    gap = FS // 4
    for i in cand[np.argsort(-env[cand], kind="stable")]:
        if not taken[max(0, i - gap):i + gap + 1].any():
            taken[i] = True
    near = FS // 12
    return np.array([i - near + int(np.argmax(xf[max(0, i - near):i + near + 1]))
                     if i >= near else int(np.argmax(xf[:i + near + 1]))
                     for i in np.flatnonzero(taken)])


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each index in a, the distance to the nearest index in b."""
    return np.abs(a[:, None] - b[None, :]).min(axis=1)


@pytest.fixture(scope="module")
def replay() -> tuple[np.ndarray, dict]:
    return ecgdata.load_replay()


@pytest.fixture(scope="module")
def detected(replay) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _detect(replay[0])


def test_committed_replay_matches_its_metadata(replay) -> None:
    x, meta = replay
    samples_path, meta_path = ecgdata.data_paths()
    assert hashlib.sha256(samples_path.read_bytes()).hexdigest() == meta["sha256"]
    assert x.dtype == np.dtype("<i2") and x.size == meta["n_samples"] == 108000
    assert (meta["sample_rate_hz"], meta["gain_counts_per_mv"], meta["baseline_counts"]) == (360, 200, 1024)
    assert meta["source"]["wheel_sha256"] == ecgdata.WHEEL_SHA256
    assert meta["source"]["member_sha256"] == ecgdata.MEMBER_SHA256
    assert meta["source"]["record"] == "208" and "ODC-By" in meta["licence"]
    # scipy's electrocardiogram() starts with -0.245 mV: (975 - 1024) / 200
    assert x[0] == 975 and 0 <= x.min() and x.max() < 2048


def test_build_reproduces_the_committed_files(replay) -> None:
    samples, meta = ecgdata.build(replay[0].astype(np.uint16))
    samples_path, meta_path = ecgdata.data_paths()
    assert samples == samples_path.read_bytes()
    assert meta == meta_path.read_bytes()


def test_npy_parser(replay) -> None:
    buf = io.BytesIO()
    np.save(buf, replay[0].astype("<u2"))
    assert np.array_equal(ecgdata._parse_npy(buf.getvalue()), replay[0])
    buf = io.BytesIO()
    np.save(buf, replay[0].astype("<i4"))
    with pytest.raises(DatasetError, match="header"):
        ecgdata._parse_npy(buf.getvalue())
    with pytest.raises(DatasetError, match="npy"):
        ecgdata._parse_npy(b"PK\x03\x04" + bytes(100))


def test_extract_rejects_a_wheel_without_the_member(tmp_path: Path) -> None:
    import zipfile

    fake = tmp_path / ecgdata.WHEEL_NAME
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("scipy/__init__.py", "")
    with pytest.raises(DatasetError, match="no member"):
        ecgdata.extract_counts(fake)
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(ecgdata.MEMBER, b"not the ECG")
    with pytest.raises(DatasetError, match="sha256"):
        ecgdata.extract_counts(fake)


def test_load_replay_rejects_a_corrupt_copy(tmp_path: Path) -> None:
    samples_path, meta_path = ecgdata.data_paths()
    shutil.copy(meta_path, tmp_path / meta_path.name)
    raw = bytearray(samples_path.read_bytes())
    raw[1000] ^= 1
    (tmp_path / samples_path.name).write_bytes(raw)
    with pytest.raises(DatasetError, match="sha256"):
        ecgdata.load_replay(tmp_path)
    (tmp_path / samples_path.name).unlink()
    with pytest.raises(DatasetError, match="cannot read"):
        ecgdata.load_replay(tmp_path)


def test_r_peaks_agree_with_an_independent_detector(replay, detected) -> None:
    x = replay[0]
    r = detected[0]
    ref = _reference_peaks(x)
    ref = ref[ref >= 2 * FS]  # the device learns its levels during the first 2 s
    assert 470 <= ref.size <= 530, ref.size
    found = (_nearest(r, ref) <= TOL).mean()  # detector beats the reference confirms
    kept = (_nearest(ref, r) <= TOL).mean()  # reference beats the detector finds
    assert found >= 0.95 and kept >= 0.95, (found, kept)


def test_premature_rule_flags_wide_beats_more_often(replay, detected) -> None:
    # PVCs are wide; record 208's mostly come at close to the sinus RR, so the RR rule
    # catches only some, but it must flag wide beats far more often than narrow ones.
    x = replay[0].astype(float)
    r, rr, mean_rr = detected
    keep = (mean_rr > 0) & (r >= 36) & (r + 36 < x.size)
    width = []
    for i in r[keep]:
        seg = x[i - 36:i + 36] - np.median(x[i - 36:i + 36])
        width.append(int((seg > 0.5 * seg.max()).sum()))  # samples above half the R height
    width = np.array(width)
    wide = width > np.median(width) + 6  # > about 17 ms wider than the typical beat
    premature = np.array([beats.classify_rr(int(a), int(b))[0] for a, b in zip(rr[keep], mean_rr[keep])])
    assert wide.sum() >= 50
    assert premature[wide].mean() >= 2 * premature[~wide].mean(), (premature[wide].mean(), premature[~wide].mean())


def test_micropython_finds_the_same_beats(detected) -> None:
    code = (
        "from array import array\n"
        "from edge.ecg import beats\n"
        "x = array('h', bytes(216000))\n"
        "f = open('tools/data/mitbih208.i16', 'rb'); f.readinto(x); f.close()\n"
        "det = beats.BeatDetector(360)\n"
        "def go():\n"
        "    out = []\n"
        "    for s in x:\n"
        "        b = det.feed(s)\n"
        "        if b is not None:\n"
        "            out.append(b[0])\n"
        "    print(out)\n"
        "go()\n"
    )
    proc = run_mp_code(code, heap="2M")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == detected[0].tolist()
