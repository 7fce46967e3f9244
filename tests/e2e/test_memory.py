"""Memory budgets of the whole emulated device (MicroPython unix port, 64-bit, modules
compiled from source at import): beat detector, model, CCM/COSE, node, outbox, UART.

The budgets are the measured floors (docs/EVIDENCE.md) rounded up to a 16 KB step: a
change that needs more heap fails here. The device must also conclude and deliver every
frame within that heap, not just start.
"""
import pytest
from procs import Device, Gateway, rows


@pytest.mark.parametrize("model, heap", [("cnn", "192K"), ("rule", "160K")])
def test_device_runs_within_its_heap_budget(tmp_path, keys, line, model, heap):
    gw = Gateway([line.b_path], tmp_path / "gw.db", keys)
    try:
        dev = Device(line.a_path, "dev-a", keys, tmp_path / "dev-a", frames=60, model=model, heap=heap)
        summary = dev.wait()
    finally:
        gw.stop()
    assert summary["acked"] == 60
    assert len(rows(tmp_path / "gw.db")) == 60
