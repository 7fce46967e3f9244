"""A clinic on this machine: one `qis gateway run` process and its emulated devices, each
device the edge code under the MicroPython unix port, on one of the clinic's links:
  serial  COBS-framed frames over the device's own pty "serial cable" (tools/sim/loopback.py)
  lora    compact frames on the emulated radio medium (tools/sim/lora_medium.py), every
          other device with an AT-command module instead of an SX127x; the gateway's
          modem is an emulated AT module; ACKs come back as multi-ACK downlinks
  mqtt    frames through a real mosquitto with the shipped clinic configuration (TLS,
          passwords, ACL) started for the clinic (tools/sim/broker.py)
The demo runs one clinic (the default) or several (a federation); the tests use it too.
"""
from __future__ import annotations

import contextlib
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
from . import emulate
from .broker import GATEWAY_USER, Broker
from .lora_at import AtModem
from .lora_medium import Medium
from .loopback import Loopback

REPLAY_SAMPLES = 108000
LINKS = ("serial", "lora", "mqtt")
PREFIX = {"serial": "ecg", "lora": "lora", "mqtt": "mqtt"}  # of the device ids, per link


class DeviceRun:
    """One emulated device process and what it reported."""

    def __init__(self, name: str, model: str, proc: subprocess.Popen, link: str = "serial") -> None:
        self.name = name
        self.model = model
        self.link = link
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


class Rig(contextlib.ExitStack):
    """The emulated parts of a clinic's links: serial cables, the LoRa medium and modems,
    the broker; the gateway's options for them; each device's link config and UART."""

    def __init__(self, workdir: Path, names: dict[str, list[str]], bit_flip_rate: float = 0.0,
                 drop_rate: float = 0.0, lora_loss: float = 0.0, time_scale: float = 50.0) -> None:
        super().__init__()
        self.time_scale = time_scale
        self.serial: dict[str, Loopback] = {}
        self.gateway_args: list[str] = []
        self.medium: Medium | None = None
        self.broker: Broker | None = None
        for i, name in enumerate(names.get("serial", ())):
            self.serial[name] = self.enter_context(Loopback(bit_flip_rate=bit_flip_rate, drop_rate=drop_rate, seed=i))
            self.gateway_args += ["--serial", self.serial[name].b_path]
        if names.get("lora"):
            self.medium = self.enter_context(Medium(workdir / "lora.sock", loss=lora_loss, time_scale=time_scale,
                                                    seed=1))
            modem = self.enter_context(AtModem(self.medium.path, "gateway"))
            self.gateway_args += ["--lora", modem.path, "--lora-time-scale", str(time_scale)]
        if names.get("mqtt"):
            self.broker = Broker(workdir / "broker", names["mqtt"]).start()
            self.callback(self.broker.stop)
            self.gateway_args += ["--mqtt", f"mqtts://{GATEWAY_USER}@127.0.0.1:{self.broker.port}",
                                  "--mqtt-password-file", str(self.broker.password_file(GATEWAY_USER)),
                                  "--mqtt-ca", str(self.broker.ca)]

    def device_link(self, link: str, name: str, index: int) -> tuple[dict, str | None]:
        """(the device's link config, the serial path its UART is on, if any)."""
        if link == "serial":
            return {"kind": "uart"}, self.serial[name].a_path
        if link == "lora":
            return {"kind": "lora", "radio": "at" if index % 2 else "sx127x", "medium": self.medium.path, "sf": 7,
                    "address": index + 1, "name": name, "time_scale": self.time_scale}, None
        return {"kind": "mqtt", "host": "127.0.0.1", "port": self.broker.port, "tls": True, "device": name,
                "password": self.broker.passwords[name]}, None


@dataclass
class Clinic:
    """A gateway and its devices (`devices` on each of `links`). gateway_args are added to
    `qis gateway run`."""

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
    links: list[str] = field(default_factory=lambda: ["serial"])
    lora_loss: float = 0.0
    time_scale: float = 50.0  # of the emulated LoRa medium

    def __post_init__(self) -> None:
        self.keys = self.workdir / "keys"
        self.db = self.workdir / "outcomes.db"
        self.by_link = {link: [f"{self.prefix}{PREFIX[link]}-{i + 1:02d}" for i in range(self.devices)]
                        for link in self.links}
        self.names = [n for link in self.links for n in self.by_link[link]]
        self.runs: list[DeviceRun] = []
        self.rig: Rig | None = None
        self.medium_stats: dict | None = None  # the LoRa medium's counters, once it is closed
        self.gateway: subprocess.Popen | None = None
        self.http = ""
        self.gateway_log: list[str] = []

    def start_gateway(self) -> None:
        for name in self.names:
            if not (self.keys / f"{name}.key").exists():
                provision(name, self.keys)
        if self.rig is None:
            self.rig = Rig(self.workdir, self.by_link, self.bit_flip_rate, self.drop_rate, self.lora_loss,
                           self.time_scale)
        cmd = [sys.executable, "-m", "qis.tools.cli.main", "gateway", "run", "--db", str(self.db), "--keys",
               str(self.keys), "--http", "0", *self.rig.gateway_args, *self.gateway_args]
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
        for link in self.links:
            for i, name in enumerate(self.by_link[link]):
                model = self.models[i % len(self.models)]
                state = self.workdir / "devices" / name
                config, serial_path = self.rig.device_link(link, name, i)
                profile = "compact" if link == "lora" else self.profile  # a full frame does not fit a LoRa packet
                emulate.prepare_state(state, self.keys / f"{name}.key", profile, model, ask_every=self.ask_every,
                                      link=config, ca=self.rig.broker.ca if link == "mqtt" else None)
                fd = self.rig.enter_context(emulate.device_io(config, serial_path, name))
                offset = (self.offset + (i * REPLAY_SAMPLES) // max(1, self.devices)) % REPLAY_SAMPLES
                io = fd if fd is not None else subprocess.DEVNULL
                proc = subprocess.Popen(emulate.device_command(state, self.frames, offset, "512K"), stdin=io,
                                        stdout=io, stderr=subprocess.PIPE, env=emulate.device_env())
                if fd is not None:
                    os.close(fd)
                self.runs.append(DeviceRun(name, model, proc, link))

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
            if self.rig is not None:
                if self.rig.medium is not None:
                    self.medium_stats = {k: v for k, v in vars(self.rig.medium.snapshot()).items()
                                         if k != "airtime_us"}
                self.rig.close()


def wait_for(predicate, timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ToolError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
