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
from .ingest.serial import SerialIngest
from .keys import load_registry
from .store import OutcomeStore

log = logging.getLogger("qis.gateway")


class Gateway:
    """One gateway: a key registry, a database, a core and the serial ports it listens on."""

    def __init__(self, keys: Path, db: Path, serial_paths: list[str], baudrate: int = 115200,
                 dead_letters_per_device: int = 1000, dead_letter_budget_bytes: int = 64 << 20) -> None:
        registry = load_registry(keys)
        if not registry:
            raise GatewayError(f"no device keys in {keys} (qis device provision first)")
        self.store = OutcomeStore(db, per_device=dead_letters_per_device, budget_bytes=dead_letter_budget_bytes)
        self.core = GatewayCore(registry, self.store)
        self.serial = SerialIngest(self.core, serial_paths, baudrate)

    async def serve(self, stats_interval: float = 0) -> None:
        """Serve until SIGINT or SIGTERM; log the stats every stats_interval seconds (0: never)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.serial.start()
        print("gateway ready", flush=True, file=sys.stderr)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=stats_interval or None)
            except asyncio.TimeoutError:
                log.info("stats %s", json.dumps(self.core.summary()))
        self.serial.close()

    def run(self, stats_interval: float = 0) -> dict:
        """Serve (blocking), then write what is pending and close; the final stats."""
        try:
            asyncio.run(self.serve(stats_interval))
            self.core.close()
            return {**self.core.summary(), **self.store.counts()}
        finally:
            self.store.close()
