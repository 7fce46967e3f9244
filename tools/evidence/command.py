"""`qis evidence all`: every evidence table in turn (docs/EVIDENCE.md), each with its
defaults; `qis evidence NAME` runs one (tools/evidence/NAME.py)."""
from __future__ import annotations

import argparse
import importlib

from . import common

TABLES = ("bytes", "routing", "fingerprint", "tinysites", "leakage")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_output_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="each table at its small test sizes (minutes, not hours)")


def run(args: argparse.Namespace) -> int:
    for name in TABLES:
        module = importlib.import_module(f"qis.tools.evidence.{name}")
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        sub = parser.parse_args(["--quick"] if args.quick and name != "bytes" else [])
        sub.doc, sub.plots, sub.no_write = args.doc, args.plots, args.no_write
        common.log("all", f"-- {name}")
        module.run(sub)
    return 0
