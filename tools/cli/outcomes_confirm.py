"""`qis outcomes confirm`: a clinician confirms or corrects a stored conclusion; the
federation routes the confirmation to the outcome's addresses."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from qis.gateway.store import OutcomeStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, type=Path, help="the gateway's database (where the outcome is stored)")
    parser.add_argument("--device", required=True, help="device id")
    parser.add_argument("--counter", required=True, type=int, help="the outcome's counter")
    parser.add_argument("--label", required=True, type=int, help="the label the clinician confirms")


def run(args: argparse.Namespace) -> int:
    store = OutcomeStore(args.db)
    try:
        done = store.confirm(args.device, args.counter, args.label)
    finally:
        store.close()
    verdict = "confirmed" if done["confirmed"] == done["concluded"] else "corrected"
    print(json.dumps({**done, "verdict": verdict}))
    return 0
