"""An emulated RYLR998-class LoRa module: AT commands on a pty, radio on the emulated medium.

The party (a device's edge/links/lora_at.py under MicroPython, or the gateway's
gateway/ingest/lora.py with pyserial) opens ``path`` like the module's UART. The thread
answers the subset of the RYLR998 command set the links use, and turns AT+SEND into a
transmission on the medium (tools/sim/lora_medium.py) and packets from the medium into
+RCV lines:

  AT                               +OK
  AT+ADDRESS=<0..65535>            +OK          AT+ADDRESS?    +ADDRESS=<n>
  AT+NETWORKID=<n>                 +OK
  AT+PARAMETER=<sf>,<bw>,<cr>,<pre> +OK         (bw 7/8/9 = 125/250/500 kHz, cr 1..4 = 4/5..4/8)
  AT+BAND=<Hz>                     +OK          AT+BAND?       +BAND=<Hz>
  AT+SEND=<addr>,<len>,<data>      +OK once the packet is off the air; +ERR=10 if the medium
                                   refused it (duty cycle), +ERR=13 if too long for the SF
  anything else                    +ERR=4 (unknown command), +ERR=5 (length mismatch)
  received                         +RCV=<sender address>,<len>,<data>,<rssi>,<snr>

<data> is binary-safe both ways: it is read and written by its length. Simplifications:
the payload goes on the air as it is (a real module adds a header of its own), and every
module hears every packet on its frequency, SF and bandwidth (address 0 is broadcast;
filtering by address is left to the frames' own key ids). Bytes for a party that does
not read are kept up to 64 KB, then the oldest are dropped (the module's buffer overflows).
"""
from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
import tty
from pathlib import Path

from .loopback import _make_link

_BW = {7: 125, 8: 250, 9: 500}
_MAX_PENDING = 64 * 1024
_MAX_LINE = 600


class AtModem:
    def __init__(self, medium_path: str | os.PathLike, name: str, link: str | os.PathLike | None = None) -> None:
        self.medium_path = str(medium_path)
        self.name = name
        self.link = Path(link) if link is not None else None
        self.freq_khz, self.sf, self.bw, self.cr, self.preamble, self.address = 915000, 9, 125, 5, 12, 0
        self._in = bytearray()  # command bytes from the party
        self._out = bytearray()  # answers for the party
        self._from_medium = bytearray()
        self._sending = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.commands = 0

    def open(self) -> AtModem:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        if self.link is not None:
            _make_link(self.link, self.path)
        self._radio = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._radio.connect(self.medium_path)
        self._radio.setblocking(False)
        self._configure()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name=f"qis-at-{self.name}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join()
            self._thread = None
            for fd in (self._wake_r, self._wake_w, self._master, self._slave):
                os.close(fd)
            self._radio.close()
            if self.link is not None and self.link.is_symlink():
                self.link.unlink()
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"emulated AT modem {self.name} failed") from error

    def __enter__(self) -> AtModem:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            sel.register(self._radio, selectors.EVENT_READ, "radio")
            sel.register(self._master, selectors.EVENT_READ, "party")
            while True:
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
                if sel.get_key(self._master).events != want:
                    sel.modify(self._master, want, "party")
                for key, events in sel.select():
                    if key.data == "wake":
                        return
                    if key.data == "radio":
                        self._on_radio()
                    elif events & selectors.EVENT_READ:
                        try:
                            self._in += os.read(self._master, 4096)
                        except BlockingIOError:
                            pass
                        self._commands()
                    if key.data == "party" and events & selectors.EVENT_WRITE:
                        self._flush()
        except BaseException as exc:
            self._error = exc
        finally:
            sel.close()

    def _answer(self, text: bytes) -> None:
        self._out += text + b"\r\n"
        if len(self._out) > _MAX_PENDING:
            del self._out[: len(self._out) - _MAX_PENDING]
        self._flush()

    def _flush(self) -> None:
        try:
            n = os.write(self._master, self._out)
        except BlockingIOError:
            return
        del self._out[:n]

    def _to_medium(self, kind: bytes, body: bytes) -> None:
        self._radio.setblocking(True)
        self._radio.sendall(kind + struct.pack(">H", len(body)) + body)
        self._radio.setblocking(False)

    def _configure(self) -> None:
        body = struct.pack(">IBHBHH", self.freq_khz, self.sf, self.bw, self.cr, self.preamble, self.address)
        self._to_medium(b"C", body + self.name.encode())

    def _on_radio(self) -> None:
        try:
            data = self._radio.recv(4096)
        except BlockingIOError:
            return
        if not data:
            raise RuntimeError("the LoRa medium closed the connection")
        self._from_medium += data
        while len(self._from_medium) >= 3:
            n = struct.unpack_from(">H", self._from_medium, 1)[0]
            if len(self._from_medium) < 3 + n:
                return
            kind, body = bytes(self._from_medium[:1]), bytes(self._from_medium[3:3 + n])
            del self._from_medium[:3 + n]
            if kind == b"R":
                addr, rssi, snr = struct.unpack(">Hhb", body[:5])
                payload = body[5:]
                self._answer(b"+RCV=%d,%d," % (addr, len(payload)) + payload + b",%d,%d" % (rssi, snr))
            elif kind == b"D":
                self._sending = False
                self._answer({0: b"+OK", 1: b"+ERR=10", 2: b"+ERR=13"}.get(body[0], b"+ERR=15"))
                self._commands()

    def _commands(self) -> None:
        """Answer every complete command in the input (one AT+SEND at a time)."""
        while not self._sending:
            if self._in.startswith(b"AT+SEND="):
                head_end = self._nth_comma(2)
                if head_end < 0:
                    if len(self._in) > 32:
                        self._reject(b"+ERR=5")
                        continue
                    return
                try:
                    _, length = (int(x) for x in bytes(self._in[8:head_end]).split(b","))
                except ValueError:
                    self._reject(b"+ERR=5")
                    continue
                end = head_end + 1 + length
                if len(self._in) < end + 2:
                    return
                payload = bytes(self._in[head_end + 1:end])
                ok = self._in[end:end + 2] == b"\r\n"
                del self._in[:end + 2]
                self.commands += 1
                if not ok:
                    self._answer(b"+ERR=5")
                    continue
                self._sending = True
                self._to_medium(b"T", payload)
                return
            nl = self._in.find(b"\r\n")
            if nl < 0:
                if len(self._in) > _MAX_LINE:
                    self._in.clear()
                    self._answer(b"+ERR=1")
                return
            line = bytes(self._in[:nl])
            del self._in[:nl + 2]
            self.commands += 1
            self._answer(self._command(line))

    def _nth_comma(self, n: int) -> int:
        at = -1
        for _ in range(n):
            at = self._in.find(b",", at + 1)
            if at < 0:
                return -1
        return at

    def _reject(self, answer: bytes) -> None:
        nl = self._in.find(b"\r\n")
        del self._in[: nl + 2 if nl >= 0 else len(self._in)]
        self._answer(answer)

    def _command(self, line: bytes) -> bytes:
        if line == b"AT":
            return b"+OK"
        if line == b"AT+BAND?":
            return b"+BAND=%d" % (self.freq_khz * 1000)
        if line == b"AT+ADDRESS?":
            return b"+ADDRESS=%d" % self.address
        word, _, value = line.partition(b"=")
        try:
            numbers = [int(x) for x in value.split(b",")] if value else []
        except ValueError:
            return b"+ERR=4"
        if word == b"AT+ADDRESS" and len(numbers) == 1 and 0 <= numbers[0] <= 65535:
            self.address = numbers[0]
        elif word == b"AT+NETWORKID" and len(numbers) == 1:
            pass
        elif word == b"AT+BAND" and len(numbers) in (1, 2) and 100_000_000 <= numbers[0] <= 1_000_000_000:
            self.freq_khz = numbers[0] // 1000
        elif (word == b"AT+PARAMETER" and len(numbers) == 4 and 5 <= numbers[0] <= 12 and numbers[1] in _BW
              and 1 <= numbers[2] <= 4 and 4 <= numbers[3] <= 24):
            self.sf, self.bw, self.cr, self.preamble = numbers[0], _BW[numbers[1]], numbers[2] + 4, numbers[3]
        else:
            return b"+ERR=4"
        self._configure()
        return b"+OK"
