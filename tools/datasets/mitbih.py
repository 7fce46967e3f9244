"""MIT-BIH record 208 replay file, rebuilt from a pinned scipy wheel (`qis data mitbih`).

The emulated devices replay a real ECG: a 5 minute excerpt (19:35 to 24:35) of record 208,
lead MLII, of the MIT-BIH Arrhythmia Database, 360 Hz, 11-bit ADC, with many premature
ventricular contractions. scipy 1.11.4 ships it as ``scipy/misc/ecg.dat``: a zip (npz)
holding one member ``ecg.npy``, a little-endian uint16 array of 108000 raw ADC counts
(``scipy.misc.electrocardiogram`` returns ``(counts - 1024) / 200`` mV).

The derived file ``tools/data/mitbih208.i16`` (raw counts as little-endian int16, readable
with ``readinto`` into ``array('h')`` on a board) and its metadata ``mitbih208.json`` are
committed, so the demo works offline on a fresh clone. This module reproduces them: it
fetches one pinned wheel (the cp311 manylinux x86_64 build, whatever the host, since the
data file is the same in every build) through `qis.tools.datasets.pinned`, extracts ``ecg.dat``
from the zip without installing or importing scipy, checks the sha256 of the wheel, of
``ecg.dat`` and of the result, and writes or (``--check``) compares the files.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import pinned
from .pinned import DatasetError

WHEEL_REQUIREMENT = "scipy==1.11.4"
WHEEL_NAME = "scipy-1.11.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA256 = "530f9ad26440e85766509dbf78edcfe13ffd0ab7fec2560ee5c36ff74d6269ff"
#: pip options that select exactly WHEEL_NAME on any host
WHEEL_SELECT = ("--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                "--implementation", "cp", "--abi", "cp311")
WHEEL = pinned.PinnedWheel(WHEEL_REQUIREMENT, WHEEL_NAME, WHEEL_SHA256, WHEEL_SELECT)
MEMBER = "scipy/misc/ecg.dat"
MEMBER_SHA256 = "f20ad3365fb9b7f845d0e5c48b6fe67081377ee466c3a220b7f69f35c8958baf"

SAMPLE_RATE = 360
GAIN = 200  # ADC counts per mV
BASELINE = 1024  # ADC count of 0 mV
N_SAMPLES = 108000
NAME = "mitbih208"

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _log(message: str) -> None:
    print("mitbih: %s" % message, file=sys.stderr, flush=True)


def data_paths(folder: Path = DATA_DIR) -> tuple[Path, Path]:
    """(samples file, metadata file) of the replay in `folder` (default: the package data)."""
    return folder / (NAME + ".i16"), folder / (NAME + ".json")


def ensure_wheel(cache: Path | str | None = None) -> Path:
    """The pinned scipy wheel in the cache, downloaded with pip if absent or corrupt."""
    return pinned.ensure_wheel(WHEEL, cache, log=_log)


def _parse_npy(raw: bytes) -> np.ndarray:
    """The 1-D little-endian uint16 array of an .npy file (format 1.0), checked field by field."""
    if raw[:8] != b"\x93NUMPY\x01\x00":
        raise DatasetError("ecg.npy is not a version 1.0 .npy file (starts %r)" % raw[:8])
    header_len = int.from_bytes(raw[8:10], "little")
    header = ast.literal_eval(raw[10:10 + header_len].decode("latin1"))
    expected = {"descr": "<u2", "fortran_order": False, "shape": (N_SAMPLES,)}
    if header != expected:
        raise DatasetError("ecg.npy header is %r, expected %r" % (header, expected))
    body = raw[10 + header_len:]
    if len(body) != 2 * N_SAMPLES:
        raise DatasetError("ecg.npy holds %d data bytes, expected %d" % (len(body), 2 * N_SAMPLES))
    return np.frombuffer(body, dtype="<u2")


def extract_counts(wheel: Path) -> np.ndarray:
    """The raw ADC counts of ``scipy/misc/ecg.dat`` in `wheel`, as uint16, sha256-checked."""
    dat = pinned.read_member(wheel, MEMBER, MEMBER_SHA256)
    with zipfile.ZipFile(io.BytesIO(dat)) as npz:
        if npz.namelist() != ["ecg.npy"]:
            raise DatasetError("ecg.dat holds %r, expected only ecg.npy" % npz.namelist())
        return _parse_npy(npz.read("ecg.npy"))


def build(counts: np.ndarray) -> tuple[bytes, bytes]:
    """(samples file bytes, metadata file bytes) for the raw ADC counts of the excerpt."""
    if counts.max() > 0x7FFF:
        raise DatasetError("ADC count %d does not fit int16" % int(counts.max()))
    samples = counts.astype("<i2").tobytes()
    meta: dict[str, Any] = {
        "file": NAME + ".i16",
        "format": "little-endian int16, raw ADC counts, one channel",
        "sample_rate_hz": SAMPLE_RATE,
        "gain_counts_per_mv": GAIN,
        "baseline_counts": BASELINE,
        "adc_bits": 11,
        "n_samples": int(counts.size),
        "sha256": hashlib.sha256(samples).hexdigest(),
        "source": {
            "database": "MIT-BIH Arrhythmia Database (PhysioNet), doi:10.13026/C2F305",
            "record": "208",
            "lead": "MLII",
            "excerpt": "19:35 to 24:35 of the 30 minute record",
            "via": "%s wheel %s, member %s (npz with ecg.npy, uint16)"
                   % (WHEEL_REQUIREMENT, WHEEL_NAME, MEMBER),
            "wheel_sha256": WHEEL_SHA256,
            "member_sha256": MEMBER_SHA256,
            "rebuild": "qis data mitbih",
        },
        "licence": "Open Data Commons Attribution License v1.0 (ODC-By), as PhysioNet "
                   "publishes the MIT-BIH Arrhythmia Database; cite Moody GB, Mark RG, IEEE "
                   "Eng Med Biol 20(3):45-50 (2001) and Goldberger AL et al., Circulation "
                   "101(23):e215-e220 (2000)",
        "limits": [
            "one patient, one lead, 5 minutes: not representative of any population",
            "no reference beat annotations are shipped; beat labels in this project come "
            "from the device's rule-based RR classifier, not from cardiologists",
            "contains noise artifacts (e.g. around 207-215 s) and 60 Hz mains interference",
            "demonstration data only; not for clinical use",
        ],
    }
    return samples, (json.dumps(meta, indent=2) + "\n").encode()


def load_replay(folder: Path = DATA_DIR) -> tuple[np.ndarray, dict[str, Any]]:
    """(int16 ADC counts, metadata) of the committed replay, checked against its sha256."""
    samples_path, meta_path = data_paths(folder)
    try:
        meta = json.loads(meta_path.read_text())
        raw = samples_path.read_bytes()
    except (OSError, ValueError) as exc:
        raise DatasetError("cannot read the replay in %s: %s" % (folder, exc)) from None
    got = hashlib.sha256(raw).hexdigest()
    if got != meta.get("sha256"):
        raise DatasetError("%s has sha256 %s, its metadata says %s" % (samples_path, got, meta.get("sha256")))
    if len(raw) != 2 * meta.get("n_samples", -1):
        raise DatasetError("%s holds %d bytes, metadata says %r samples"
                           % (samples_path, len(raw), meta.get("n_samples")))
    return np.frombuffer(raw, dtype="<i2"), meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `qis data mitbih`."""
    parser.add_argument("--check", action="store_true",
                        help="compare the committed files with a rebuild; write nothing")
    parser.add_argument("--out", type=Path, default=DATA_DIR,
                        help="folder to write (or check) mitbih208.i16 and .json (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder holding the downloaded wheel (default: env QIS_DATA, "
                             "<repo>/var/data in a checkout, else ~/.cache/qis-edge/data)")


def run(args: argparse.Namespace) -> int:
    """Rebuild the replay from the pinned wheel; write it, or with --check compare it."""
    wheel = ensure_wheel(args.cache)
    _log("wheel %s (sha256 ok)" % wheel)
    counts = extract_counts(wheel)
    _log("%s: %d samples, counts %d..%d (sha256 ok)" % (MEMBER, counts.size, int(counts.min()), int(counts.max())))
    wanted = dict(zip(data_paths(args.out), build(counts)))
    if args.check:
        status = 0
        for path, data in wanted.items():
            same = path.is_file() and path.read_bytes() == data
            print("%s: %s" % (path, "ok" if same else "differs"))
            status |= 0 if same else 1
        return status
    args.out.mkdir(parents=True, exist_ok=True)
    for path, data in wanted.items():
        path.write_bytes(data)
        print(path)
    return 0
