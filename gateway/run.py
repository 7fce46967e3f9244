"""`qis gateway run`: receive, verify, store and acknowledge frames from serial ports."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from .core import GatewayCore
from .ingest.serial import SerialIngest
from .keys import KeyFileError, load_registry
from .store import OutcomeStore, StoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serial", action="append", required=True, metavar="PATH", help="serial port (repeatable)")
    parser.add_argument("--db", required=True, type=Path, help="SQLite database file")
    parser.add_argument("--keys", required=True, type=Path, help="device key directory")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--dead-letter-budget", type=float, default=64, metavar="MB",
                        help="disk budget of the dead-letter table; oldest rows go first (default 64)")
    parser.add_argument("--dead-letters-per-device", type=int, default=1000, metavar="N",
                        help="dead letters kept per device; oldest rows go first (default 1000)")
    parser.add_argument("--stats-interval", type=float, default=0, help="log counters every S seconds (0: off)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every dead letter")


async def serve(core: GatewayCore, ingest: SerialIngest, stats_interval: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ingest.start()
    print("gateway ready", flush=True, file=sys.stderr)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=stats_interval or None)
        except asyncio.TimeoutError:
            logging.getLogger("qis.gateway").info("stats %s", json.dumps(stats(core)))
    ingest.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose or args.stats_interval else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        registry = load_registry(args.keys)
    except KeyFileError as exc:
        print(f"qis gateway run: {exc}", file=sys.stderr)
        return 1
    if not registry:
        print(f"qis gateway run: no device keys in {args.keys} (qis device provision first)", file=sys.stderr)
        return 1
    try:
        store = OutcomeStore(args.db, per_device=args.dead_letters_per_device,
                             budget_bytes=int(args.dead_letter_budget * 1024 * 1024))
    except StoreError as exc:
        print(f"qis gateway run: {exc}", file=sys.stderr)
        return 1
    core = GatewayCore(registry, store)
    try:
        asyncio.run(serve(core, SerialIngest(core, args.serial, args.baudrate), args.stats_interval))
        core.close()
        print(json.dumps({**stats(core), **store.counts()}), file=sys.stderr)
    finally:
        store.close()
    return 0


def stats(core: GatewayCore) -> dict:
    """The core's counters, refusals by code, and the dead-letter table against its bounds."""
    return {**dict(core.stats), "refused_by_code": core.refusals.totals(), "retention": core.store.retention()}


def store_counts(db: Path) -> dict[str, int]:
    """Row counts of a gateway database, read-only (safe beside a running gateway)."""
    store = OutcomeStore(db, readonly=True)
    try:
        return store.counts()
    finally:
        store.close()
