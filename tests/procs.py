"""Real processes for end-to-end tests: `qis gateway run`, `qis device emulate`, pty links."""
from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path


QIS = [sys.executable, "-m", "qis.tools.cli.main"]


class Gateway:
    """A `qis gateway run` process on the given serial paths."""

    def __init__(self, paths: list[str], db: Path, keys: Path, extra: list[str] = ()) -> None:
        self.args = [*QIS, "gateway", "run", "--db", str(db), "--keys", str(keys), "-v", *extra]
        for p in paths:
            self.args += ["--serial", p]
        self.log: list[str] = []
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:  # log lines may come first
            self.log.append(line)
            if "gateway ready" in line:
                break
        else:
            raise RuntimeError("gateway exited before it was ready:\n" + "".join(self.log))
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()

    def _drain(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.log.append(line)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class Device:
    """A `qis device emulate` process (and its MicroPython child) in its own process group."""

    def __init__(self, serial: str | None, name: str, keys: Path, state: Path, frames: int, profile: str = "full",
                 model: str = "cnn", heap: str = "512K", link: list[str] = (), extra: tuple[str, ...] = ()) -> None:
        """serial: the pty path, or None with link: the emulate options of another link."""
        self.state = state
        args = [*QIS, "device", "emulate", *(["--serial", serial] if serial else link), "--id", name, "--keys",
                str(keys), "--frames", str(frames), "--profile", profile, "--state", str(state), "--quiet",
                "--model", model, "--heap", heap, *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def acked(self) -> list[int]:
        path = self.state / "acked.log"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def wait(self, timeout: float = 300) -> dict:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class RawLine:
    """A pty the gateway opens as its serial port; the test holds the other end (the
    master) and speaks for the device. The test also keeps the slave open, so that the
    gateway may close and reopen its end without hanging the pair up."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._buf = b""

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_until(self, wanted: bytes, timeout: float = 10) -> float:
        """Seconds until wanted has arrived (counted from the call); TimeoutError if never."""
        t0 = time.monotonic()
        while wanted not in self._buf:
            left = t0 + timeout - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{wanted.hex()} did not arrive in {timeout} s")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                self._buf += os.read(self.master, 65536)
        self._buf = self._buf.split(wanted, 1)[1]
        return time.monotonic() - t0

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


def wait_until(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def rows(db: Path) -> dict[tuple[str, int], int]:
    """(device, counter) -> duplicates, for every stored outcome."""
    con = sqlite3.connect(db)
    try:
        return {(d, c): n for d, c, n in con.execute("SELECT device, counter, duplicates FROM outcomes")}
    finally:
        con.close()


def dead_letters(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r for (r,) in con.execute("SELECT reason FROM dead_letters")]
    finally:
        con.close()


def refusals(db: Path) -> dict[str, int]:
    """Refusals of unauthenticated input (counted, never stored as rows), by code."""
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT code, SUM(count) FROM refusals GROUP BY code"))
    finally:
        con.close()


def outbox(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "outbox").glob("*.f"))
