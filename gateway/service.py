"""The running gateway: its core, its links and its periodic stats on one asyncio loop.

`qis gateway run` builds a Gateway from its options and calls run(); a test or another
program can do the same. Nothing here decides anything about frames: that is the core's.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from .core import GatewayCore
from .errors import GatewayError
from .ingest.commit import Committer
from .ingest.serial import SerialIngest
from .keys import load_registry
from .store import OutcomeStore

log = logging.getLogger("qis.gateway")


class Gateway:
    """One gateway: a key registry, a database, a core and the links it listens on (serial
    ports, an MQTT broker, LoRa modems), all committing through one Committer."""

    def __init__(self, keys: Path, db: Path, serial_paths: list[str], baudrate: int = 115200,
                 dead_letters_per_device: int = 1000, dead_letter_budget_bytes: int = 64 << 20,
                 mqtt=None, lora=None) -> None:
        """mqtt: an ingest.mqtt.MqttOptions, or None; lora: an ingest.lora.LoraOptions, or None."""
        registry = load_registry(keys)
        if not registry:
            raise GatewayError(f"no device keys in {keys} (qis device provision first)")
        if not (serial_paths or mqtt or lora):
            raise GatewayError("no link to listen on: give --serial, --mqtt or --lora")
        self.store = OutcomeStore(db, per_device=dead_letters_per_device, budget_bytes=dead_letter_budget_bytes)
        self.core = GatewayCore(registry, self.store)
        self.committer = Committer(self.core)
        self.links = []
        self.serial = SerialIngest(self.core, serial_paths, baudrate, committer=self.committer) if serial_paths else None
        if self.serial is not None:
            self.links.append(self.serial)
        if mqtt is not None:
            from .ingest.mqtt import MqttIngest

            self.links.append(MqttIngest(self.core, mqtt, self.committer))
        if lora is not None:
            from .ingest.lora import LoraIngest

            self.links.append(LoraIngest(self.core, lora, self.committer))

    async def serve(self, stats_interval: float = 0) -> None:
        """Serve until SIGINT or SIGTERM; log the stats every stats_interval seconds (0: never)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        for link in self.links:
            link.start()
        self.committer.start()
        print("gateway ready", flush=True, file=sys.stderr)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=stats_interval or None)
            except asyncio.TimeoutError:
                log.info("stats %s", json.dumps(self.core.summary()))
        self.committer.close()
        for link in self.links:
            link.close()

    def run(self, stats_interval: float = 0) -> dict:
        """Serve (blocking), then write what is pending and close; the final stats."""
        try:
            asyncio.run(self.serve(stats_interval))
            self.core.close()
            return {**self.core.summary(), **self.store.counts()}
        finally:
            self.store.close()
