"""The running gateway: its core, its links, its federation and its HTTP endpoint on one
asyncio loop.

Rules: every link feeds the core and asks the one Committer for a commit
(gateway/ingest/commit.py); after each commit the committer hands the downlinks (ACKs,
answers) to the links, and tells the service, which wakes the federation's forwarder and
starts answering the queries the commit claimed. An answer is sealed and stored by the
core and goes out with the next commit. `qis gateway run` builds a Gateway from
its options; a test or another program can do the same. Nothing here decides anything
about frames (the core does) or about outcomes after their ACK (the federation does).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from qis.edge.frame import UNAVAILABLE

from .bus import LocalBus, NatsBus
from .core import Flushed, GatewayCore
from .errors import GatewayError
from .federation import Federation, Settings
from .http import HttpEndpoint
from .ingest.commit import Committer
from .ingest.serial import SerialIngest
from .journal import Journal
from .keys import load_registry
from .sites import PeerSite, Site, load_site, load_sites
from .store import OutcomeStore
from .synth import Answer
from .verify import Query

log = logging.getLogger("qis.gateway")


class Gateway:
    """One gateway: keys, database, core, links (serial ports, an MQTT broker, LoRa modems)
    committing through one Committer, federation, HTTP endpoint."""

    def __init__(self, keys: Path, db: Path, serial_paths: list[str], baudrate: int = 115200,
                 dead_letters_per_device: int = 1000, dead_letter_budget_bytes: int = 64 << 20,
                 site_key: Path | None = None, sites_file: Path | None = None, nats: list[str] | None = None,
                 settings: Settings | None = None, http_port: int | None = None, mqtt=None, lora=None) -> None:
        """mqtt: an ingest.mqtt.MqttOptions, or None; lora: an ingest.lora.LoraOptions, or None."""
        registry = load_registry(keys)
        if not registry:
            raise GatewayError(f"no device keys in {keys} (qis device provision first)")
        if not (serial_paths or mqtt or lora):
            raise GatewayError("no link to listen on: give --serial, --mqtt or --lora")
        self.store = OutcomeStore(db, per_device=dead_letters_per_device, budget_bytes=dead_letter_budget_bytes)
        self.core = GatewayCore(registry, self.store)
        self.committer = Committer(self.core, self._committed)
        self.links: list = []
        if serial_paths:
            self.links.append(SerialIngest(self.core, serial_paths, self.committer, baudrate))
        if mqtt is not None:
            from .ingest.mqtt import MqttIngest

            self.links.append(MqttIngest(self.core, mqtt, self.committer))
        if lora is not None:
            from .ingest.lora import LoraIngest

            self.links.append(LoraIngest(self.core, lora, self.committer))
        self.federation = self._federation(db, site_key, sites_file, nats, settings)
        self.http = HttpEndpoint(self.federation, self.status, http_port) if http_port is not None else None
        self._answering: set[asyncio.Task] = set()

    def _federation(self, db: Path, site_key: Path | None, sites_file: Path | None, nats: list[str] | None,
                    settings: Settings | None) -> Federation:
        if nats:
            if site_key is None or sites_file is None:
                raise GatewayError("a federated gateway needs --site-key (its signing key) and --sites (the "
                                   "federation's public keys)")
            site = load_site(site_key)
            peers = load_sites(sites_file)
            if site.kid not in peers:
                raise GatewayError(f"site {site.name} is not in the sites file {sites_file}")
            bus = NatsBus(nats, site.name, replicas=min(3, len(nats)))
            return Federation(site, Journal(self.store.path), bus, peers, settings)
        # One clinic, no broker: an in-process bus, and a site identity of this run only
        # (the aggregates are rebuilt from the database at every start).
        site = load_site(site_key) if site_key else Site("local", Ed25519PrivateKey.generate(), os.urandom(32))
        peers = {site.kid: PeerSite(site.name, site.private.public_key())}
        local = settings or Settings(m=1)  # one site: "from at least m sites" can only mean one
        return Federation(site, Journal(self.store.path), LocalBus(site.name), peers, local)

    # ------------------------------------------------------------------ after a commit

    def _committed(self, done: Flushed) -> None:
        if done.committed:
            self.federation.wake()
        for port, query in done.queries:
            task = asyncio.create_task(self._answer(port, query))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _answer(self, port: str, query: Query) -> None:
        """Answer a query; whatever goes wrong, the device gets an answer, never silence."""
        try:
            status, answer = await asyncio.wait_for(self.federation.answer(query),
                                                    self.federation.settings.ask_timeout_s + 1)
        except Exception:  # noqa: BLE001 - a bug or a timeout: say so to the device
            log.exception("answering a query of %s failed; it gets UNAVAILABLE", query.device)
            status, answer = UNAVAILABLE, Answer()
        self.core.answer(port, query, status, answer.outcomes, answer.sites, answer.labels, answer.confirmed,
                         answer.models)
        self.committer.schedule()

    # ------------------------------------------------------------------ running

    def status(self) -> dict:
        return {"gateway": {**self.core.summary(), **self.store.counts()}, "federation": self.federation.summary()}

    async def serve(self, stats_interval: float = 0) -> None:
        """Serve until SIGINT or SIGTERM; log the stats every stats_interval seconds (0: never)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)  # kill -USR2: what every task waits on
        for link in self.links:
            link.start()
        self.committer.start()
        await self.federation.start()
        if self.http is not None:
            await self.http.start()
            print(f"http http://127.0.0.1:{self.http.port}", flush=True, file=sys.stderr)
        print("gateway ready", flush=True, file=sys.stderr)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=stats_interval or None)
            except asyncio.TimeoutError:
                log.info("stats %s", json.dumps(self.status()))
        if self._answering:  # an answer being computed gets its ask timeout, then no more
            await asyncio.wait(self._answering, timeout=self.federation.settings.ask_timeout_s + 1)
        self.committer.close()
        self.committer.flush()  # commit what the links delivered last: the federation's writes must not wait for it
        for link in self.links:
            link.close()
        if self.http is not None:
            await self.http.stop()
        try:
            await asyncio.wait_for(self.federation.stop(), 15)
        except asyncio.TimeoutError:
            log.warning("the federation did not stop in 15 s; leaving anyway (forwarding resumes from the cursor)")

    def run(self, stats_interval: float = 0) -> dict:
        """Serve (blocking), then write what is pending and close; the final stats."""
        try:
            asyncio.run(self.serve(stats_interval))
            self.core.close()
            return self.status()
        finally:
            self.store.close()
            self.federation.journal.close()


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}: {task.get_coro()}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()
