"""A clinic on this machine: one `qis gateway run` process and its emulated devices, each
device the edge code under the MicroPython unix port on its own pty "serial cable".
The demo runs one (a single clinic) or several (a federation); the tests use it too.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from qis.gateway.keys import provision

from ..errors import ToolError
from . import emulate, micropython
from .loopback import Loopback

REPLAY_SAMPLES = 108000


class DeviceRun:
    """One emulated device process and what it reported."""

    def __init__(self, name: str, model: str, proc: subprocess.Popen) -> None:
        self.name = name
        self.model = model
        self.proc = proc
        self.concluded: dict[int, int] = {}  # counter -> label
        self.acked: set[int] = set()
        self.answers: list[dict] = []
        self.asked = 0
        self.unanswered = 0
        self.summary: dict = {}
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            try:
                event = json.loads(line)
            except ValueError:
                self.errors.append(line)
                continue
            kind = event.get("ev")
            if kind == "concluded":
                self.concluded[event["counter"]] = event["label"]
            elif kind == "acked":
                self.acked.add(event["counter"])
            elif kind == "asked":
                self.asked += 1
            elif kind == "answer":
                self.answers.append(event["answer"])
            elif kind == "unanswered":
                self.unanswered += 1
            elif kind == "done":
                self.summary = event
            elif kind == "error":
                self.errors.append(event.get("reason", line))


@dataclass
class Clinic:
    """A gateway and its devices. gateway_args are added to `qis gateway run`."""

    name: str
    workdir: Path
    devices: int
    frames: int
    profile: str = "full"
    models: list[str] = field(default_factory=lambda: ["cnn"])
    ask_every: int = 0
    bit_flip_rate: float = 0.0
    drop_rate: float = 0.0
    gateway_args: list[str] = field(default_factory=list)
    offset: int = 0  # where in the replay this clinic's first device starts
    prefix: str = ""  # of the device ids: "" gives ecg-01, ecg-02, ...

    def __post_init__(self) -> None:
        self.keys = self.workdir / "keys"
        self.db = self.workdir / "outcomes.db"
        self.names = [f"{self.prefix}ecg-{i + 1:02d}" for i in range(self.devices)]
        self.runs: list[DeviceRun] = []
        self.links: list[Loopback] = []
        self.gateway: subprocess.Popen | None = None
        self.http = ""
        self.gateway_log: list[str] = []

    def start_gateway(self) -> None:
        for name in self.names:
            if not (self.keys / f"{name}.key").exists():
                provision(name, self.keys)
        if not self.links:
            self.links = [Loopback(bit_flip_rate=self.bit_flip_rate, drop_rate=self.drop_rate, seed=i).open()
                          for i in range(self.devices)]
        cmd = [sys.executable, "-m", "qis.tools.cli.main", "gateway", "run", "--db", str(self.db), "--keys",
               str(self.keys), "--http", "0", *self.gateway_args]
        for link in self.links:
            cmd += ["--serial", link.b_path]
        self.gateway = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        for line in self.gateway.stderr:
            self.gateway_log.append(line)
            if line.startswith("http "):
                self.http = line.split()[1]
            if "gateway ready" in line:
                break
        else:
            raise ToolError(f"the gateway of {self.name} did not start: {''.join(self.gateway_log)[-2000:]}")
        threading.Thread(target=lambda: self.gateway_log.extend(self.gateway.stderr), daemon=True).start()

    def start_devices(self) -> None:
        for i, (name, link) in enumerate(zip(self.names, self.links)):
            model = self.models[i % len(self.models)]
            state = self.workdir / "devices" / name
            emulate.prepare_state(state, self.keys / f"{name}.key", self.profile, model, ask_every=self.ask_every)
            fd = emulate.open_raw(link.a_path)
            offset = (self.offset + (i * REPLAY_SAMPLES) // max(1, self.devices)) % REPLAY_SAMPLES
            proc = subprocess.Popen(emulate.device_command(state, self.frames, offset, "512K"), stdin=fd, stdout=fd,
                                    stderr=subprocess.PIPE, env=micropython.env())
            os.close(fd)
            self.runs.append(DeviceRun(name, model, proc))

    def devices_running(self) -> bool:
        return any(d.proc.poll() is None for d in self.runs)

    def get(self, path: str, timeout: float = 10) -> dict:
        """GET path from the gateway's HTTP endpoint, as JSON."""
        with urllib.request.urlopen(self.http + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def query(self, fingerprint: bytes, profile: str, probe: int = 0) -> dict:
        body = json.dumps({"domain": 1, "fingerprint": fingerprint.hex(), "profile": profile, "probe": probe})
        req = urllib.request.Request(self.http + "/query", body.encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def stop_devices(self) -> None:
        for dev in self.runs:
            if dev.proc.poll() is None:
                dev.proc.kill()
            dev.proc.wait()
            dev.thread.join(timeout=5)
            if dev.proc.returncode:
                dev.errors.append(f"exited with status {dev.proc.returncode}")

    def stop_gateway(self, timeout: float = 60) -> None:
        """SIGTERM, then wait; a gateway that does not stop is made to dump its stacks
        (SIGUSR1) and killed, and the dump is in the error."""
        if self.gateway is None or self.gateway.poll() is not None:
            return
        self.gateway.terminate()
        try:
            self.gateway.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.gateway.send_signal(signal.SIGUSR2)  # the asyncio tasks' stacks
            time.sleep(0.5)
            self.gateway.send_signal(signal.SIGUSR1)  # the threads' stacks
            time.sleep(1.0)
            self.gateway.kill()
            self.gateway.wait()
            raise ToolError(f"the gateway of {self.name} did not stop in {timeout:.0f} s:\n"
                            + "".join(self.gateway_log[-200:])) from None

    def close(self) -> None:
        try:
            self.stop_devices()
            self.stop_gateway()
        finally:
            for link in self.links:
                link.close()


def wait_for(predicate, timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ToolError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
