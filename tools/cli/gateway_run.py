"""`qis gateway run`: receive, verify, store and acknowledge frames from serial ports."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from qis.gateway.service import Gateway


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serial", action="append", required=True, metavar="PATH", help="serial port (repeatable)")
    parser.add_argument("--db", required=True, type=Path, help="SQLite database file (created 0600)")
    parser.add_argument("--keys", required=True, type=Path, help="device key directory (0700)")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--dead-letter-budget", type=float, default=64, metavar="MB",
                        help="disk budget of the dead-letter table; oldest rows go first (default 64)")
    parser.add_argument("--dead-letters-per-device", type=int, default=1000, metavar="N",
                        help="dead letters kept per device; oldest rows go first (default 1000)")
    parser.add_argument("--stats-interval", type=float, default=0, help="log counters every S seconds (0: off)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every dead letter")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose or args.stats_interval else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    gateway = Gateway(args.keys, args.db, args.serial, args.baudrate, args.dead_letters_per_device,
                      int(args.dead_letter_budget * 1024 * 1024))
    print(json.dumps(gateway.run(args.stats_interval)), file=sys.stderr)
    return 0
