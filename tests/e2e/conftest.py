"""Fixtures for the end-to-end tests (process helpers live in tests/procs.py)."""
from pathlib import Path

import pytest

from qis.gateway.keys import provision
from qis.tools.sim.loopback import Loopback


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    for name in ("dev-a", "dev-b"):
        provision(name, d)
    return d


@pytest.fixture
def line():
    """A clean pty serial cable."""
    with Loopback(seed=1) as lb:
        yield lb
