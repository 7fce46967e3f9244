"""`qis site provision`: a site's signing key for the federation (file 0600), and its
public key added to the federation's sites file."""
from __future__ import annotations

import argparse
from pathlib import Path

from qis.gateway.sites import add_to_sites_file, provision_site


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, help="site id (A-Z a-z 0-9 . _ -)")
    parser.add_argument("--key", required=True, type=Path, help="the site key file to create (0600)")
    parser.add_argument("--sites", type=Path,
                        help="the federation's sites file: add this site's public key to it (created if missing)")


def run(args: argparse.Namespace) -> int:
    site = provision_site(args.id, args.key)
    print(f"provisioned site {site.name}: public key {site.public.hex()}, key file {args.key} (0600)")
    if args.sites:
        add_to_sites_file(args.sites, site)
        print(f"added {site.name} to {args.sites}; give every gateway of the federation the same file")
    return 0



