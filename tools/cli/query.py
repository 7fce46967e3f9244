"""`qis query`: ask a gateway what similar cases concluded (its HTTP endpoint, /query)."""
from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from qis.gateway.errors import GatewayError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fingerprint", help="the case's fingerprint, hex (4 bytes compact, 16 full)")
    parser.add_argument("--url", default="http://127.0.0.1:8450", help="the gateway (default http://127.0.0.1:8450)")
    parser.add_argument("--domain", type=int, default=1, help="domain id (default 1, ECG beat)")
    parser.add_argument("--profile", choices=["compact", "full"], default=None,
                        help="the fingerprint's profile (default: from its length)")
    parser.add_argument("--probe", action="store_true", help="also ask the neighbouring buckets")


def run(args: argparse.Namespace) -> int:
    profile = args.profile or ("compact" if len(args.fingerprint.replace(" ", "")) == 8 else "full")
    body = json.dumps({"domain": args.domain, "fingerprint": args.fingerprint.replace(" ", ""), "profile": profile,
                       "probe": int(args.probe)}).encode()
    request = urllib.request.Request(args.url.rstrip("/") + "/query", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise GatewayError(f"{args.url} refused the query: {exc.read().decode(errors='replace')}") from None
    except OSError as exc:
        raise GatewayError(f"no gateway answers at {args.url} ({exc}); is it running with --http?") from None
    print(json.dumps(answer))
    return 0
