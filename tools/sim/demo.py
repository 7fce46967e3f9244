"""`qis demo`: clinics of emulated devices on replayed ECG, end to end.

Every part is the real one: each device is the edge code under the MicroPython unix
port, on its link (a pty "serial cable" by default; LoRa on the emulated radio medium and
MQTT through a real mosquitto with --links, tools/sim/clinic.py) to a `qis gateway run`
process that stores into SQLite; every few beats a device asks what
similar cases concluded and shows the answer. With one clinic (the default) the gateway
routes and synthesizes in process. With --sites N the demo starts a local 3-node NATS
JetStream cluster and N clinics whose gateways federate through it: outcomes concluded
at one clinic are forwarded to the owners of their addresses, and a query at one site is
answered from outcomes of the others. At the end the demo checks the databases against
what the devices concluded, and the owners' aggregates against a recomputation from
every site's database.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qis.edge.ecg.registry import MODELS, label_names
from qis.gateway.federation import Settings
from qis.gateway.sites import Site, add_to_sites_file, load_site, provision_site
from qis.gateway.store import OutcomeStore

from ..errors import ToolError, UsageError
from . import recompute
from .clinic import LINKS, Clinic, wait_for
from .natscluster import NatsCluster

STATUS = {0: "answered", 1: "not enough similar cases", 2: "unknown spec", 3: "partial", 4: "unavailable"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--links", default="serial", help="comma-separated: serial, lora, mqtt (default serial)")
    parser.add_argument("--devices", type=int, default=3, help="emulated devices per link and clinic (default 3)")
    parser.add_argument("--frames", type=int, default=50, help="outcomes per device (default 50)")
    parser.add_argument("--profile", default="full", choices=["compact", "full"],
                        help="frame profile on serial and MQTT (LoRa always carries compact frames)")
    parser.add_argument("--lora-loss", type=float, default=0.0, help="LoRa: packets lost, per receiver")
    parser.add_argument("--time-scale", type=float, default=50.0,
                        help="LoRa: the emulated medium runs this many times faster than real time (default 50)")
    parser.add_argument("--model", default="cnn", choices=[*MODELS, "mixed"],
                        help="the devices' model: the int8 ECG5000 CNN (default), the MLP, the depthwise separable "
                             "CNN, the RR rule, or mixed (each in turn: they meet at the same addresses)")
    parser.add_argument("--ask-every", type=int, default=10, help="a device asks after every N-th beat (default 10)")
    parser.add_argument("--sites", type=int, default=1,
                        help="clinics; more than 1 federates them through a local 3-node NATS cluster")
    parser.add_argument("--bit-flip-rate", type=float, default=0.0, help="line noise: bit flips per byte")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="line noise: dropped bytes per byte")
    parser.add_argument("--workdir", type=Path, help="keep keys, databases and device flash here")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    links = parse_links(args.links)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qis-demo-"))
    models = list(MODELS) if args.model == "mixed" else [args.model]
    cluster: NatsCluster | None = None
    settings = Settings() if args.sites > 1 else Settings(m=1)
    clinics: list[Clinic] = []
    started = time.monotonic()
    try:
        sites = _sites(workdir, args.sites) if args.sites > 1 else []
        if args.sites > 1:
            cluster = NatsCluster(workdir / "nats").start()
        for i in range(args.sites):
            name = f"site{i + 1}" if args.sites > 1 else "clinic"
            extra = []
            if cluster is not None:
                extra = [*(f"--nats={u}" for u in cluster.urls()), "--site-key", str(workdir / f"{name}.site"),
                         "--sites", str(workdir / "sites.json")]
            clinics.append(Clinic(name, workdir / name if args.sites > 1 else workdir, args.devices, args.frames,
                                  args.profile, models, args.ask_every, args.bit_flip_rate, args.drop_rate, extra,
                                  offset=i * 9000, prefix=f"{name}-" if args.sites > 1 else "", links=links,
                                  lora_loss=args.lora_loss, time_scale=args.time_scale))
        for clinic in clinics:
            clinic.start_gateway()
        for clinic in clinics:
            clinic.start_devices()
        _progress(console, clinics, args.frames, started, args.timeout)
        for clinic in clinics:
            clinic.stop_devices()
        summary = _settle(clinics, sites, settings, started, args.timeout)
        answers_from_others = _cross_site_answer(clinics) if len(clinics) > 1 else None
        statuses = [c.get("/status") for c in clinics]
    finally:
        for clinic in clinics:
            clinic.close()
        if cluster is not None:
            cluster.stop()
    summary = _summarize(args, clinics, summary, statuses, answers_from_others, time.monotonic() - started, workdir)
    _show(console, clinics, summary, statuses)
    if args.json:
        print(json.dumps(summary))
    ok = summary["rows_match"] and summary["aggregates_match_recomputation"] and not summary["device_errors"]
    return 0 if ok else 1


def parse_links(text: str) -> list[str]:
    links = [x.strip() for x in text.split(",") if x.strip()]
    if not links or not set(links) <= set(LINKS) or len(set(links)) != len(links):
        raise UsageError(f"--links takes serial, lora and mqtt, comma-separated, not {text!r}")
    return links


def _sites(workdir: Path, n: int) -> list[Site]:
    """Site keys and the sites file of an n-site federation (kept across runs in workdir)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sites = []
    for i in range(n):
        path = workdir / f"site{i + 1}.site"
        site = load_site(path) if path.exists() else provision_site(f"site{i + 1}", path)
        add_to_sites_file(workdir / "sites.json", site)
        sites.append(site)
    return sites


def _progress(console: Console, clinics: list[Clinic], frames: int, started: float, timeout: float) -> None:
    runs = [d for c in clinics for d in c.runs]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=not console.is_terminal) as progress:
        sent = progress.add_task("concluded + sent", total=len(runs) * frames)
        acked = progress.add_task("acknowledged   ", total=len(runs) * frames)
        while any(c.devices_running() for c in clinics):
            progress.update(sent, completed=sum(len(d.concluded) for d in runs))
            progress.update(acked, completed=sum(len(d.acked) for d in runs))
            if time.monotonic() - started > timeout:
                raise ToolError(f"the demo did not finish in {timeout:.0f} s (--timeout)")
            time.sleep(0.1)
        progress.update(sent, completed=sum(len(d.concluded) for d in runs))
        progress.update(acked, completed=sum(len(d.acked) for d in runs))


def _settle(clinics: list[Clinic], sites: list[Site], settings: Settings, started: float, timeout: float) -> dict:
    """Wait until every site has forwarded all it stored and the owners' aggregates equal
    the recomputation (or time runs out); the check's outcome."""
    def forwarded() -> bool:
        for c in clinics:
            status = c.get("/status")
            if status["federation"]["cursor"]["outcomes"] < status["gateway"]["frames_stored"]:
                return False
        return True

    wait_for(forwarded, max(5.0, timeout - (time.monotonic() - started)), "forwarding to finish")
    pairs = [(site, c.db) for site, c in zip(sites, clinics)] if sites else [
        (Site("local", Ed25519PrivateKey.generate(), bytes(32)), clinics[0].db)]
    want = recompute.expected(pairs)
    replicas = settings.replicas if len(clinics) > 1 else 1
    problems: list[str] = []

    def matches() -> bool:
        nonlocal problems
        held = {(s.name if sites else "local"): c.get("/aggregates") for s, c in zip(sites or [None], clinics)}
        problems = recompute.compare(want, held, replicas)
        return not problems

    try:
        wait_for(matches, 30, "the owners' aggregates to match the recomputation", step=0.5)
    except ToolError:
        pass
    return {"aggregates_match_recomputation": not problems, "problems": problems[:5], "addresses": len(want)}


def _cross_site_answer(clinics: list[Clinic]) -> dict:
    """A query at the first site about a case of the last one: answered from the others."""
    store = OutcomeStore(clinics[-1].db, readonly=True)
    try:
        row = next(iter(store.outcomes()))
    finally:
        store.close()
    return clinics[0].query(bytes.fromhex(row["fingerprint"]), row["profile"])


def _summarize(args, clinics, check, statuses, cross, elapsed, workdir) -> dict:
    runs = [d for c in clinics for d in c.runs]
    rows_match = True
    counts: Counter[str] = Counter()
    per_link: dict[str, Counter[str]] = {link: Counter() for link in clinics[0].links}
    for c in clinics:
        store = OutcomeStore(c.db, readonly=True)
        try:
            counts.update(store.counts())
            rows_match &= all(store.labels(d.name) == d.concluded for d in c.runs)
            for link in c.links:
                per_link[link].update(_link_summary(store, [d for d in c.runs if d.link == link]))
        finally:
            store.close()
    summary = {
        "sites": len(clinics), "devices": len(runs), "profile": args.profile,
        "links": {link: dict(v) for link, v in per_link.items()},
        "frames_sent": sum(len(d.concluded) for d in runs), "frames_acked": sum(len(d.acked) for d in runs),
        **counts,
        "transmissions": sum(d.summary.get("transmissions", 0) for d in runs),
        "retransmissions": sum(d.summary.get("retransmissions", 0) for d in runs),
        "rows_match": rows_match,
        "queries_asked": sum(d.asked for d in runs),
        "queries_answered": sum(len(d.answers) for d in runs),
        "queries_unanswered": sum(d.unanswered for d in runs),
        "outcomes_forwarded": sum(s["federation"].get("outcomes_forwarded", 0) for s in statuses),
        "records_applied": sum(s["federation"].get("records_applied", 0) for s in statuses),
        **{k: check[k] for k in ("aggregates_match_recomputation", "addresses")},
        "device_errors": sum(len(d.errors) for d in runs),
        "elapsed_s": round(elapsed, 2),
        "workdir": str(workdir),
    }
    mediums = [c.medium_stats for c in clinics if c.medium_stats]
    if mediums:  # one LoRa medium per clinic: their counters added up
        summary["lora_medium"] = {k: sum(m[k] for m in mediums) if isinstance(mediums[0][k], (int, float))
                                  else mediums[0][k] for k in mediums[0]}
    if check["problems"]:
        summary["recomputation_problems"] = check["problems"]
    if cross is not None:
        summary["cross_site_answer"] = cross
    return summary


def _link_summary(store: OutcomeStore, devices: list) -> dict:
    """Frames sent, acknowledged and stored, the dead letters, and the queries asked and
    answered, of one link's devices."""
    mine = {d.name for d in devices}
    return {"devices": len(devices), "frames_sent": sum(len(d.concluded) for d in devices),
            "frames_acked": sum(len(d.acked) for d in devices),
            "frames_stored": sum(len(store.labels(d.name)) for d in devices),
            "dead_letters": sum(1 for row in store.dead_letters() if row["device"] in mine),
            "retransmissions": sum(d.summary.get("retransmissions", 0) for d in devices),
            "queries_asked": sum(d.asked for d in devices), "queries_answered": sum(len(d.answers) for d in devices)}


def _describe(answer: list, model: int) -> str:
    status, outcomes, sites, labels = answer[0], answer[1], answer[2], answer[3]
    if status not in (0, 3):
        return STATUS.get(status, str(status))
    names = label_names(model) or []
    parts = [f"{names[lab] if lab < len(names) else lab} {round(100 * share / 255)}%" for lab, share in labels]
    return f"{', '.join(parts)} ({outcomes} outcomes, {sites} sites)"


def _show(console: Console, clinics: list[Clinic], summary: dict, statuses: list[dict]) -> None:
    table = Table(title="qis demo")
    for col in ("site", "device", "link", "model", "concluded", "acked", "asked",
                "last answer: similar cases concluded"):
        table.add_column(col, justify="right" if col in ("concluded", "acked", "asked") else "left")
    for c in clinics:
        for d in c.runs:
            last = _describe(d.answers[-1], MODELS[d.model][0]) if d.answers else "-"
            table.add_row(c.name, d.name, d.link, d.model, str(len(d.concluded)), str(len(d.acked)),
                          f"{len(d.answers)}/{d.asked}", last)
    console.print(table)
    for c, s in zip(clinics, statuses):
        fed = s["federation"]
        console.print(f"{c.name}: stored {s['gateway']['frames_stored']}, forwarded {fed.get('outcomes_forwarded', 0)}"
                      f", owns {fed['owned_units']} units ({fed['addresses']} addresses), applied "
                      f"{fed.get('records_applied', 0)} records", soft_wrap=True)
    if "cross_site_answer" in summary:
        a = summary["cross_site_answer"]
        console.print(f"asked at {clinics[0].name} about a case of {clinics[-1].name}: {a['status_name']}, "
                      f"{a['outcomes']} outcomes from {a['sites']} sites", soft_wrap=True)
    console.print(f"rows match devices: {summary['rows_match']}; owners' aggregates match a recomputation from every "
                  f"database: {summary['aggregates_match_recomputation']} ({summary['addresses']} addresses); "
                  f"{summary['elapsed_s']} s (workdir {summary['workdir']})", soft_wrap=True)
