"""`qis frame decode HEX --keys DIR`: verify and print one frame as JSON, or say why not."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .keys import KeyFileError, load_registry
from .verify import Rejected, jsonable, open_outcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hex", help="the frame as hex (whitespace allowed)")
    parser.add_argument("--keys", required=True, type=Path, help="device key directory")


def run(args: argparse.Namespace) -> int:
    try:
        frame = bytes.fromhex("".join(args.hex.split()))
    except ValueError:
        print("qis frame decode: not a hex string", file=sys.stderr)
        return 2
    try:
        outcome = open_outcome(frame, load_registry(args.keys))
    except (Rejected, KeyFileError) as exc:
        print(f"qis frame decode: rejected: {exc}", file=sys.stderr)
        return 1
    fields = dataclasses.asdict(outcome)
    fields.update(kid=outcome.kid.hex(), fingerprint=outcome.fingerprint.hex(), type="outcome", size=len(frame),
                  ext=jsonable(outcome.ext))
    print(json.dumps(fields))
    return 0

