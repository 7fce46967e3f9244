"""Serial-cable emulation on the host: two pty endpoints joined by an impairing relay.

    party A  <->  slave A | master A  <-- relay thread -->  master B | slave B  <->  party B

Each party (a device emulator on A, the gateway with pyserial on B) opens its slave path
(``a_path``/``b_path``, e.g. /dev/pts/7) like a serial port. A relay thread copies bytes
master A -> master B and back, and may flip bits or drop bytes on the way, per direction,
from a seeded generator so a run can be repeated. With a line rate (``baud``) each
direction delivers at most baud / 10 bytes a second (8 data bits, start and stop bit), as
a UART would: a token bucket of at most ``_BURST`` bytes, so throughput can be measured
against a real limit.

The relay keeps its own fd on both slaves open for its whole life, because on Linux the
last close of a pty slave hangs the pair up: the master then reads EIO and polls as
readable (POLLHUP) forever, so a selector loop would spin or have to tear the pair down.
Holding the slave open lets a party close and reopen its end (a restarted device, a
gateway reconnecting) while the relay, the path and the raw line settings stay as they
are. Bytes sent towards a closed end wait in that slave's input queue; pyserial flushes
them when it opens the port. A receiver that stops reading applies back-pressure (the
relay stops reading the other side) rather than losing bytes.
"""
from __future__ import annotations

import argparse
import errno
import os
import random
import selectors
import signal
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from ..errors import UsageError

DIRECTIONS = ("a_to_b", "b_to_a")
_CHUNK = 4096
_BURST = 256  # bytes a paced line may deliver at once (a UART's FIFO, a scheduling slice)


@dataclass
class LineCounters:
    """What the relay did in one direction. Once drained: received == relayed + dropped."""

    received: int = 0  # bytes read from the sending side
    relayed: int = 0  # bytes written to the receiving side (flipped ones included)
    flipped: int = 0  # bytes with one bit flipped
    dropped: int = 0  # bytes never delivered
    # Impairments by offset in the received stream, if keep_log: (offset, "flip"|"drop").
    log: list[tuple[int, str]] = field(default_factory=list)


class _Line:
    """One direction: source master fd, destination master fd, impairment and counters."""

    def __init__(self, src: int, dst: int, flip: float, drop: float, rng: random.Random, keep_log: bool,
                 rate: float = 0.0) -> None:
        self.src, self.dst = src, dst
        self.flip, self.drop = flip, drop
        self.rng = rng
        self.keep_log = keep_log
        self.rate = rate  # bytes per second; 0: as fast as the ptys go
        self.credit = float(_BURST)  # bytes the line may deliver now (token bucket)
        self.stamp = time.monotonic()
        self.pending = b""  # impaired bytes the destination has not taken yet
        self.counters = LineCounters()

    def chunk(self) -> int:
        return min(_CHUNK, _BURST) if self.rate else _CHUNK

    def allowance(self, now: float) -> tuple[int, float]:
        """(bytes the line may deliver now, seconds until it may deliver some if none)."""
        if not self.rate:
            return len(self.pending), 0.0
        self.credit = min(float(_BURST), self.credit + (now - self.stamp) * self.rate)
        self.stamp = now
        want = min(len(self.pending), _BURST // 4)  # wake for a quarter of the bucket, send what it holds
        if self.credit >= want:
            return min(len(self.pending), int(self.credit)), 0.0
        return 0, (want - self.credit) / self.rate

    def impair(self, data: bytes) -> bytes:
        """Apply drop/flip per byte; update counters."""
        c = self.counters
        base = c.received
        c.received += len(data)
        if not (self.flip or self.drop):
            return data
        out = bytearray()
        rand = self.rng.random
        for i, byte in enumerate(data):
            r = rand()
            if r < self.drop:
                c.dropped += 1
                if self.keep_log:
                    c.log.append((base + i, "drop"))
                continue
            if r < self.drop + self.flip:
                byte ^= 1 << self.rng.randrange(8)
                c.flipped += 1
                if self.keep_log:
                    c.log.append((base + i, "flip"))
            out.append(byte)
        return bytes(out)


class Loopback:
    """Two pty endpoints joined by a relay thread that can impair the line.

    Use as a context manager, or call open() and close(). Rates are per byte:
    ``drop_rate`` drops the byte, ``bit_flip_rate`` flips one random bit of it.
    ``impair`` picks the impaired direction(s): "both", "a_to_b" or "b_to_a".
    """

    def __init__(self, *, bit_flip_rate: float = 0.0, drop_rate: float = 0.0, seed: int | None = None,
                 impair: str = "both", link_a: str | os.PathLike | None = None,
                 link_b: str | os.PathLike | None = None, keep_log: bool = False, baud: int = 0) -> None:
        if baud < 0:
            raise ValueError(f"baud must be >= 0 (0: no line rate), not {baud!r}")
        for name, rate in (("bit_flip_rate", bit_flip_rate), ("drop_rate", drop_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], not {rate!r}")
        if bit_flip_rate + drop_rate > 1.0:
            raise ValueError(f"bit_flip_rate + drop_rate must not exceed 1, not {bit_flip_rate + drop_rate!r}")
        if impair not in ("both", *DIRECTIONS):
            raise ValueError(f"impair must be 'both', 'a_to_b' or 'b_to_a', not {impair!r}")
        self.bit_flip_rate, self.drop_rate, self.seed, self.impair = bit_flip_rate, drop_rate, seed, impair
        self.link_a = Path(link_a) if link_a is not None else None
        self.link_b = Path(link_b) if link_b is not None else None
        self.keep_log = keep_log
        self.baud = baud
        self._fds: list[int] = []
        self._links: list[tuple[Path, str]] = []
        self._lines: dict[str, _Line] = {}
        self._paths: tuple[str, str] | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------

    def open(self) -> Loopback:
        """Create the two pty pairs, the optional symlinks, and start the relay thread."""
        if self._thread is not None:
            raise RuntimeError("loopback already open")
        try:
            master_a, slave_a = self._openpty()
            master_b, slave_b = self._openpty()
            self._paths = (os.ttyname(slave_a), os.ttyname(slave_b))
            for link, path in ((self.link_a, self._paths[0]), (self.link_b, self._paths[1])):
                if link is not None:
                    _make_link(link, path)
                    self._links.append((link, path))
            self._wake_r, self._wake_w = os.pipe()
            self._fds += [self._wake_r, self._wake_w]
            for i, (name, src, dst) in enumerate((("a_to_b", master_a, master_b), ("b_to_a", master_b, master_a))):
                on = self.impair in ("both", name)
                rng = random.Random(None if self.seed is None else f"{self.seed}/{name}")
                self._lines[name] = _Line(src, dst, self.bit_flip_rate if on else 0.0,
                                          self.drop_rate if on else 0.0, rng, self.keep_log, self.baud / 10)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._relay, name="qis-loopback", daemon=True)
        self._thread.start()
        return self

    def _openpty(self) -> tuple[int, int]:
        master, slave = os.openpty()
        self._fds += [master, slave]  # the slave fd too: see the module docstring
        tty.setraw(slave)  # no echo, no CR/LF translation, 8 data bits, no parity stripping
        os.set_blocking(master, False)
        return master, slave

    def close(self) -> None:
        """Stop the relay thread, close every fd, remove the symlinks. Idempotent."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join()
            self._thread = None
        for link, path in self._links:
            if link.is_symlink() and os.readlink(link) == path:  # still ours
                link.unlink()
        self._links = []
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("loopback relay thread failed") from error

    def __enter__(self) -> Loopback:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- what the parties and tests see ------------------------------------------------

    @property
    def a_path(self) -> str:
        """Slave path of end A (e.g. /dev/pts/7), for the device side."""
        if self._paths is None:
            raise RuntimeError("loopback not open")
        return self._paths[0]

    @property
    def b_path(self) -> str:
        """Slave path of end B, for the gateway side."""
        if self._paths is None:
            raise RuntimeError("loopback not open")
        return self._paths[1]

    def counters(self) -> dict[str, LineCounters]:
        """A consistent snapshot of both directions' counters (logs copied)."""
        with self._lock:
            return {name: LineCounters(c.received, c.relayed, c.flipped, c.dropped, list(c.log))
                    for name, c in ((n, line.counters) for n, line in self._lines.items())}

    def pending(self) -> int:
        """Bytes read from one side that the other side has not taken yet."""
        with self._lock:
            return sum(len(line.pending) for line in self._lines.values())

    # -- the relay thread ---------------------------------------------------------------

    def _relay(self) -> None:
        sel = selectors.DefaultSelector()
        lines = list(self._lines.values())
        try:
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                # Read a side only when its previous bytes were delivered (back-pressure);
                # wait for the destination to take pending bytes otherwise.
                wanted: dict[int, int] = {}
                timeout = None  # seconds until a paced line may deliver again
                now = time.monotonic()
                for line in lines:
                    if line.pending:
                        allowed, wait = line.allowance(now)
                        if not allowed:
                            timeout = wait if timeout is None else min(timeout, wait)
                            continue
                        wanted[line.dst] = wanted.get(line.dst, 0) | selectors.EVENT_WRITE
                    else:
                        wanted[line.src] = wanted.get(line.src, 0) | selectors.EVENT_READ
                for fd, events in wanted.items():
                    _set_interest(sel, fd, events)
                for fd in {line.src for line in lines} | {line.dst for line in lines}:
                    if fd not in wanted and fd in sel.get_map():
                        sel.unregister(fd)
                # Blocks: no spin. A timeout only while a paced line waits for its rate.
                ready = {key.fd: ev for key, ev in sel.select(timeout)}
                if self._wake_r in ready:
                    return
                for line in lines:
                    if not line.pending and ready.get(line.src, 0) & selectors.EVENT_READ:
                        data = _read(line.src, line.chunk())
                        with self._lock:
                            line.pending = line.impair(data)
                    if line.pending:
                        self._write(line)  # EAGAIN: the next select waits for EVENT_WRITE
        except BaseException as exc:  # surfaced by close()
            self._error = exc
        finally:
            sel.close()

    def _write(self, line: _Line) -> None:
        allowed, _ = line.allowance(time.monotonic())
        if not allowed:
            return
        try:
            n = os.write(line.dst, line.pending[:allowed])
        except BlockingIOError:
            return
        if line.rate:
            line.credit -= n
        with self._lock:
            line.pending = line.pending[n:]
            line.counters.relayed += n


def _set_interest(sel: selectors.BaseSelector, fd: int, events: int) -> None:
    if fd in sel.get_map():
        if sel.get_key(fd).events != events:
            sel.modify(fd, events)
    else:
        sel.register(fd, events)


def _read(fd: int, n: int) -> bytes:
    try:
        return os.read(fd, n)
    except BlockingIOError:
        return b""
    except OSError as exc:  # EIO: every slave fd closed, which holding ours prevents
        if exc.errno == errno.EIO:
            raise RuntimeError("pty hung up (slave closed)") from exc
        raise


def _make_link(link: Path, target: str) -> None:
    """Point symlink `link` at target, replacing an old symlink but never a real file."""
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
    link.symlink_to(target)


# -- `qis loopback` -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `qis loopback` options."""
    parser.add_argument("--link-a", type=Path, help="symlink to end A's pty (device side)")
    parser.add_argument("--link-b", type=Path, help="symlink to end B's pty (gateway side)")
    parser.add_argument("--bit-flip-rate", type=float, default=0.0, help="per byte: probability one bit flips")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="per byte: probability it is dropped")
    parser.add_argument("--seed", type=int, default=None, help="seed of the impairments (repeatable runs)")
    parser.add_argument("--impair", choices=("both", *DIRECTIONS), default="both", help="impaired direction(s)")
    parser.add_argument("--baud", type=int, default=0,
                        help="line rate in baud, 8N1: baud/10 bytes a second each way (default 0: unpaced)")


def run(args: argparse.Namespace) -> int:
    """Relay until SIGINT/SIGTERM; print the two paths at start and the counters at exit."""
    try:
        loop = Loopback(bit_flip_rate=args.bit_flip_rate, drop_rate=args.drop_rate, seed=args.seed,
                        impair=args.impair, link_a=args.link_a, link_b=args.link_b, baud=args.baud)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stop = {signal.SIGINT, signal.SIGTERM}
    # Block the signals before the relay thread exists (it inherits the mask), then wait
    # for them synchronously: no handler, no polling loop.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    with loop:
        print(f"A {loop.a_path}" + (f" (link {args.link_a})" if args.link_a else ""), flush=True)
        print(f"B {loop.b_path}" + (f" (link {args.link_b})" if args.link_b else ""), flush=True)
        signum = signal.sigwait(stop)
        counters = loop.counters()
    signal.pthread_sigmask(signal.SIG_SETMASK, old)
    print(f"stopped by {signal.Signals(signum).name}")
    for name, c in counters.items():
        print(f"{name}: received {c.received} relayed {c.relayed} flipped {c.flipped} dropped {c.dropped}")
    return 0
