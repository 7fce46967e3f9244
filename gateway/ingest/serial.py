"""Serial ingest: an asyncio shell that moves bytes between pyserial ports and GatewayCore.

All reads that are ready in one loop iteration are fed to the core, then one flush()
commits them together and the ACKs go out: one fsync per batch instead of per frame.
A port that fails (a device unplugged, a pty whose other side went away) is closed and
reopened every ``reopen_s`` seconds; the other ports carry on.
"""
from __future__ import annotations

import asyncio
import logging

import serial

from ..core import GatewayCore

log = logging.getLogger("qis.gateway.serial")


class SerialIngest:
    """Reads and writes the given serial ports on the running event loop."""

    def __init__(self, core: GatewayCore, paths: list[str], baudrate: int = 115200, reopen_s: float = 0.5) -> None:
        self.core = core
        self.paths = paths
        self.baudrate = baudrate
        self.reopen_s = reopen_s
        self._ports: dict[str, serial.Serial] = {}
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for path in self.paths:
            self._open(path)

    def _open(self, path: str) -> None:
        try:
            port = serial.Serial(path, self.baudrate, timeout=0, write_timeout=2)
        except (serial.SerialException, OSError) as exc:
            log.warning("cannot open %s (%s); retrying in %.1fs", path, exc, self.reopen_s)
            self._loop.call_later(self.reopen_s, self._open, path)
            return
        self._ports[path] = port
        self._loop.add_reader(port.fileno(), self._on_readable, path)
        log.info("listening on %s", path)

    def _close(self, path: str, reason: str) -> None:
        port = self._ports.pop(path, None)
        if port is None:
            return
        self._loop.remove_reader(port.fileno())
        port.close()
        log.warning("%s closed (%s); reopening in %.1fs", path, reason, self.reopen_s)
        self._loop.call_later(self.reopen_s, self._open, path)

    def _on_readable(self, path: str) -> None:
        port = self._ports[path]
        try:
            data = port.read(4096)
        except (serial.SerialException, OSError) as exc:
            self._close(path, str(exc))
            return
        if not data:  # readable but empty: the other side hung up
            self._close(path, "hang-up")
            return
        self.core.receive(path, data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for path, wire in self.core.flush():
            port = self._ports.get(path)
            if port is None:
                continue  # the port went away; the device will retransmit and get a new ACK
            try:
                port.write(wire)
            except (serial.SerialException, OSError) as exc:
                self._close(path, str(exc))

    def close(self) -> None:
        for path in list(self._ports):
            port = self._ports.pop(path)
            self._loop.remove_reader(port.fileno())
            port.close()
