"""`qis device provision`: create a device key (file mode 0600 in a 0700 directory)."""
from __future__ import annotations

import argparse
from pathlib import Path

from qis.gateway.keys import key_path, provision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, help="device id (A-Z a-z 0-9 . _ -)")
    parser.add_argument("--keys", required=True, type=Path, help="key directory (created 0700)")


def run(args: argparse.Namespace) -> int:
    entry = provision(args.id, args.keys)
    # The kid is an identifier, not a secret; the key itself is never printed.
    print(f"provisioned {entry.device}: kid {entry.kid.hex()}, key file {key_path(args.keys, entry.device)} (0600)")
    return 0
