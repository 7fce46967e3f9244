"""`qis outcomes export`: every stored outcome as one JSON object per line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .store import OutcomeStore, StoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, type=Path, help="SQLite database file")
    parser.add_argument("--dead-letters", action="store_true", help="export the dead-letter table instead")


def run(args: argparse.Namespace) -> int:
    if not args.db.exists():
        print(f"qis outcomes export: no database at {args.db}", file=sys.stderr)
        return 1
    try:
        store = OutcomeStore(args.db, readonly=True)
    except StoreError as exc:
        print(f"qis outcomes export: {exc}", file=sys.stderr)
        return 1
    try:
        rows = store.dead_letters() if args.dead_letters else store.outcomes()
        for row in rows:
            sys.stdout.write(json.dumps(row, separators=(",", ":")) + "\n")
    finally:
        store.close()
    return 0
