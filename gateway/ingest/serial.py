"""Serial ingest: an asyncio shell that moves bytes between pyserial ports and GatewayCore.

Rules:
- All reads that are ready in one loop iteration are fed to the core, then one flush()
  commits them together and the ACKs go out: one fsync per batch instead of per frame.
- No port can stall another: ACKs are written without blocking into the port's file
  descriptor; what the port cannot take at once waits in that port's own output queue,
  drained when the port is writable. A queue that would grow past ``max_queue`` bytes
  (a device, or anyone, that never reads its ACKs) resets that port alone: closed, its
  queue dropped, reopened later. Devices re-send what was not acknowledged.
- A port that fails (a device unplugged, a pty whose other side went away) is closed and
  reopened every ``reopen_s`` seconds; the other ports carry on.
"""
from __future__ import annotations

import asyncio
import logging
import os

import serial

from ..core import GatewayCore

log = logging.getLogger("qis.gateway.serial")


class SerialIngest:
    """Reads and writes the given serial ports on the running event loop."""

    def __init__(self, core: GatewayCore, paths: list[str], baudrate: int = 115200, reopen_s: float = 0.5,
                 max_queue: int = 16384) -> None:
        self.core = core
        self.paths = paths
        self.baudrate = baudrate
        self.reopen_s = reopen_s
        self.max_queue = max_queue
        self._ports: dict[str, serial.Serial] = {}
        self._queues: dict[str, bytearray] = {}
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for path in self.paths:
            self._open(path)
        self._tick()

    def _tick(self) -> None:
        """A flush every second even without input: refusal counts held back reach the disk."""
        self._schedule_flush()
        self._ticker = self._loop.call_later(1.0, self._tick)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _open(self, path: str) -> None:
        try:
            port = serial.Serial(path, self.baudrate, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError) as exc:
            log.warning("cannot open %s (%s); retrying in %.1fs", path, exc, self.reopen_s)
            self._loop.call_later(self.reopen_s, self._open, path)
            return
        os.set_blocking(port.fileno(), False)
        self._ports[path] = port
        self._queues[path] = bytearray()
        self._loop.add_reader(port.fileno(), self._on_readable, path)
        log.info("listening on %s", path)

    def _close(self, path: str, reason: str) -> None:
        port = self._ports.pop(path, None)
        if port is None:
            return
        self._loop.remove_reader(port.fileno())
        self._loop.remove_writer(port.fileno())
        dropped = len(self._queues.pop(path, b""))
        port.close()
        self.core.stats["port_resets"] += 1
        log.warning("%s closed (%s; %d queued bytes dropped); reopening in %.1fs", path, reason, dropped,
                    self.reopen_s)
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
        self._schedule_flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        for path, wire in self.core.flush():
            queue = self._queues.get(path)
            if queue is None:
                continue  # the port went away; the device will retransmit and get a new ACK
            if len(queue) + len(wire) > self.max_queue:
                self._close(path, f"output queue over {self.max_queue} bytes: the other side is not reading")
                continue
            queue += wire
            if len(queue) == len(wire):  # the queue was empty: nothing is waiting on writability
                self._drain(path)

    def _drain(self, path: str) -> None:
        """Write what the port takes now; wait for writability for the rest."""
        port, queue = self._ports.get(path), self._queues.get(path)
        if port is None or queue is None:
            return
        try:
            n = os.write(port.fileno(), queue)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._close(path, str(exc))
            return
        del queue[:n]
        if queue:
            self._loop.add_writer(port.fileno(), self._drain, path)
        else:
            self._loop.remove_writer(port.fileno())

    def close(self) -> None:
        self._ticker.cancel()
        for path in list(self._ports):
            port = self._ports.pop(path)
            self._loop.remove_reader(port.fileno())
            self._loop.remove_writer(port.fileno())
            port.close()
