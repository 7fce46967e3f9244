"""The boards `qis board` knows: runtime, mpy-cross architecture, the stubs of their port."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    board: str  # folder under boards/
    runtime: str  # "micropython" or "cpython"
    arch: str  # mpy-cross -march ("" for CPython: sources are deployed)
    port: str  # MicroPython stubs port the board's code is checked against ("" for CPython)
    scripts: tuple[str, ...]  # files the firmware runs as source (never compiled)


TARGETS = {
    "esp32": Target("esp32", "micropython", "xtensawin", "esp32", ("boot.py", "main.py")),
    "rpi": Target("rpi", "cpython", "", "", ("main.py",)),
    "unix": Target("unix", "micropython", "host", "unix", ("main.py", "romboot.py")),
}
# Ports the edge package itself is checked against (every port a board of ours runs on;
# rp2 for RP2040 boards, whose mpy-cross architecture is armv6m).
EDGE_PORTS = ("esp32", "rp2", "unix")
