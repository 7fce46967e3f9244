"""`qis frame decode HEX --keys DIR`: verify and print one frame as JSON, or say why not."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from qis.gateway.errors import GatewayError
from qis.gateway.keys import load_registry
from qis.gateway.verify import Rejected, open_outcome

from ..errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hex", help="the frame as hex (whitespace allowed)")
    parser.add_argument("--keys", required=True, type=Path, help="device key directory")


def run(args: argparse.Namespace) -> int:
    try:
        frame = bytes.fromhex("".join(args.hex.split()))
    except ValueError:
        raise UsageError("not a hex string") from None
    try:
        outcome = open_outcome(frame, load_registry(args.keys))
    except Rejected as exc:
        raise GatewayError(f"rejected: {exc}") from None
    print(json.dumps({**outcome.as_json(), "type": "outcome", "size": len(frame)}))
    return 0
