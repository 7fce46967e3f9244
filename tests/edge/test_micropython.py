"""Every test module in tests/edge/ runs again here, under the real MicroPython unix port."""
from pathlib import Path

import pytest

from mp import ROOT, run_micropython

EDGE_TESTS = sorted(p.stem for p in Path(__file__).parent.glob("test_*.py") if p.stem != "test_micropython")


@pytest.mark.parametrize("module", EDGE_TESTS)
def test_module_passes_under_micropython(module: str) -> None:
    proc = run_micropython([str(ROOT / "tests/edge/mp_run.py"), str(ROOT), module], heap="8M")
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode(errors="replace")
    summary = out.strip().splitlines()[-1]  # stdout only: MicroPython warns on stderr
    assert summary.endswith(" 0 failed") and not summary.startswith("0 passed"), out
