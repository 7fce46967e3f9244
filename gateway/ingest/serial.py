"""Serial ingest: the serial link's framing and an asyncio shell around GatewayCore.

On a byte stream every frame travels as a stream record, ``00 COBS(frame || CRC32 LE) 00``
(docs/PROTOCOL.md, "Stream records"). ``RecordDecoder`` is the gateway's own sans-IO
reader of that format, on the `cobs` package; the edge's is edge/stream.py.

Rules of the shell:
- All reads that are ready in one loop iteration are fed to the core, then one flush()
  commits them together and the ACKs (and answers) go out: one fsync per batch instead of per frame
  (gateway/ingest/commit.py; the commit is shared with the gateway's other links).
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
import binascii
import logging
import os

import serial
from cobs import cobs

from ..core import Flushed, GatewayCore
from .commit import Committer

log = logging.getLogger("qis.gateway.serial")
MAX_FRAME = 600  # larger than any profile; a longer record is line noise


def encode_record(frame: bytes) -> bytes:
    """The stream record of one frame."""
    return b"\x00" + cobs.encode(frame + binascii.crc32(frame).to_bytes(4, "little")) + b"\x00"


class RecordDecoder:
    """Stream records in, ("frame", bytes) and ("error", reason) events out.

    A 0x00 ends a record (an empty one, between two delimiters, is normal). A record that
    grows past the longest a MAX_FRAME frame can make is reported as "too long" at once
    and the bytes up to the next 0x00 are dropped, which resynchronises.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.max_record = max_frame + 4 + (max_frame + 4) // 254 + 1
        self._record = bytearray()
        self._skip = False

    def feed(self, data: bytes) -> list[tuple[str, bytes | str]]:
        events: list[tuple[str, bytes | str]] = []
        start = 0
        while start <= len(data):
            end = data.find(0, start)
            piece = data[start:len(data) if end < 0 else end]
            if not self._skip:
                if len(self._record) + len(piece) > self.max_record:
                    events.append(("error", "too long"))
                    self._record.clear()
                    self._skip = True
                else:
                    self._record += piece
            if end < 0:
                break
            if self._skip:
                self._skip = False
            elif self._record:
                events.append(self._decode(bytes(self._record)))
                self._record.clear()
            start = end + 1
        return events

    def _decode(self, record: bytes) -> tuple[str, bytes | str]:
        try:
            body = cobs.decode(record)
        except cobs.DecodeError:
            return ("error", "cobs: block runs past the end of the record")
        if len(body) < 4:
            return ("error", "too short")
        if len(body) - 4 > self.max_frame:
            return ("error", "too long")
        frame = body[:-4]
        if binascii.crc32(frame) != int.from_bytes(body[-4:], "little"):
            return ("error", "crc mismatch")
        return ("frame", frame)


def deliver(core: GatewayCore, port: str, decoder: RecordDecoder, data: bytes) -> None:
    """Feed bytes read from port: whole frames to the core, what was not a frame counted."""
    for kind, value in decoder.feed(data):
        if kind == "frame":
            core.receive(port, value)
        else:
            core.refuse(port, "stream", value)


class SerialIngest:
    """Reads and writes the given serial ports on the running event loop; frames read go to
    the core, and the committer hands back the downlinks of these ports (deliver)."""

    def __init__(self, core: GatewayCore, paths: list[str], committer: Committer, baudrate: int = 115200,
                 reopen_s: float = 0.5, max_queue: int = 16384) -> None:
        """committer: the gateway's one, shared by all its links."""
        self.core = core
        self.paths = list(paths)
        self.baudrate = baudrate
        self.reopen_s = reopen_s
        self.max_queue = max_queue
        self.committer = committer
        committer.links.append(self)
        self._ports: dict[str, serial.Serial] = {}
        self._decoders: dict[str, RecordDecoder] = {}
        self._queues: dict[str, bytearray] = {}
        self._empty_reads: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for path in self.paths:
            self._open(path)

    def _open(self, path: str) -> None:
        try:
            port = serial.Serial(path, self.baudrate, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError) as exc:
            log.warning("cannot open %s (%s); retrying in %.1fs", path, exc, self.reopen_s)
            self._loop.call_later(self.reopen_s, self._open, path)
            return
        os.set_blocking(port.fileno(), False)
        self._ports[path] = port
        self._decoders[path] = RecordDecoder()
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
        # The descriptor is non-blocking, in non-canonical mode with VMIN = VTIME = 0 (as
        # pyserial sets it for timeout=0): "nothing now" reads as 0 bytes or EAGAIN, and a
        # port that is gone raises (EIO for a pty whose other side closed, ENODEV for an
        # unplugged adapter). Only a long run of empty reads on a port that keeps saying
        # it is readable counts as a hang-up.
        port = self._ports[path]
        try:
            data = os.read(port.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._close(path, str(exc))
            return
        if not data:
            self._empty_reads[path] = self._empty_reads.get(path, 0) + 1
            if self._empty_reads[path] > 1000:
                self._close(path, "hang-up (readable, but nothing to read)")
            return
        self._empty_reads[path] = 0
        deliver(self.core, path, self._decoders[path], data)
        self.committer.schedule()

    def deliver(self, done: Flushed) -> None:
        """Queue the ACKs and answers of the ports this ingest owns (the committer calls this)."""
        for path, ack in (*done.acks, *((port, frame) for port, _, frame in done.answers)):
            queue = self._queues.get(path)
            if queue is None:
                continue  # the port went away; the device will retransmit and get a new ACK
            wire = encode_record(ack)
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
        for path in list(self._ports):
            port = self._ports.pop(path)
            self._loop.remove_reader(port.fileno())
            self._loop.remove_writer(port.fileno())
            port.close()
