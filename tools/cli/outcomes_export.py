"""`qis outcomes export`: every stored outcome (or dead letter) as one JSON object per line."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qis.gateway.errors import GatewayError
from qis.gateway.store import OutcomeStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, type=Path, help="SQLite database file")
    parser.add_argument("--dead-letters", action="store_true",
                        help="export the dead-letter table instead, with a summary of refusals on stderr")


def run(args: argparse.Namespace) -> int:
    if not args.db.exists():
        raise GatewayError(f"no database at {args.db}")
    store = OutcomeStore(args.db, readonly=True)
    try:
        rows = store.dead_letters() if args.dead_letters else store.outcomes()
        for row in rows:
            sys.stdout.write(json.dumps(row, separators=(",", ":")) + "\n")
        if args.dead_letters:
            show_refusals(store, Console(stderr=True))
    finally:
        store.close()
    return 0


def show_refusals(store: OutcomeStore, console: Console) -> None:
    """What was refused without being stored (counts), and how full the dead-letter table is."""
    table = Table(title="refused before authentication (counted, not stored)")
    for col in ("port", "code", "detail", "count", "first", "last"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for r in store.refusals():
        table.add_row(r["port"], r["code"], r["detail"] or "-", str(r["count"]), _when(r["first_at"]),
                      _when(r["last_at"]))
    console.print(table)
    ret = store.retention()
    console.print(f"dead letters: {ret['dead_letter_rows']} rows, {ret['dead_letter_bytes']} of "
                  f"{ret['budget_bytes']} bytes budget, at most {ret['per_device']} per device, "
                  f"{ret['evicted']} evicted", soft_wrap=True)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
