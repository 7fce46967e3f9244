"""`qis device provision`: create a device key, or rotate it (files 0600 in a 0700 directory)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from qis.gateway.keys import key_path, provision, read_key_file, rotate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, help="device id (A-Z a-z 0-9 . _ -)")
    parser.add_argument("--keys", required=True, type=Path, help="key directory (created 0700)")
    parser.add_argument("--rotate", action="store_true",
                        help="give an existing device a new key; the old one stays accepted for --grace-days")
    parser.add_argument("--grace-days", type=float, default=7,
                        help="with --rotate: days the gateway still accepts the old key id (default 7)")


def run(args: argparse.Namespace) -> int:
    # Key ids are identifiers, not secrets; keys themselves are never printed.
    if not args.rotate:
        entry = provision(args.id, args.keys)
        print(f"provisioned {entry.device}: kid {entry.kid.hex()}, key file {key_path(args.keys, entry.device)} (0600)")
        return 0
    entry = rotate(args.id, args.keys, args.grace_days * 86400)
    _, retired = read_key_file(key_path(args.keys, args.id))
    old = retired[0]
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(old.accept_until))
    print(f"rotated {entry.device}: new kid {entry.kid.hex()}; old kid {old.kid.hex()} accepted until {until}. "
          f"Restart the gateway, then re-key the device (qis device emulate --rekey, or flash its new config).")
    return 0
