"""`qis bench federation`: the federation's bus work against bare NATS doing the same, on a
real local 3-node JetStream cluster, interleaved, several runs.

  forwarding   outcomes per second a gateway's forwarder moves from its database to the
               stream (sign each record, publish it once per table with its message id,
               wait for every ack, move the cursor), against a bare nats-py loop publishing
               the same number of messages of the same size with the same concurrency
  queries      the latency of a query at one gateway answered by the owners of its eight
               addresses at the other two (signed ask and reply, k/m release, combination),
               against a bare NATS request-reply of the same payload size
  bytes        bus bytes per outcome (records x tables)

Three gateways' federations run in this process on one event loop, each with its own
database and NATS connection; the outcomes are real frames through the real core.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import nats
from rich.console import Console
from rich.table import Table

from qis.edge import frame as spec
from qis.edge.ccm import CCM
from qis.gateway import route
from qis.gateway.bus import NatsBus
from qis.gateway.core import GatewayCore
from qis.gateway.federation import Federation, Settings
from qis.gateway.journal import Journal
from qis.gateway.keys import DeviceKey
from qis.gateway.sites import add_to_sites_file, load_sites, provision_site
from qis.gateway.store import OutcomeStore

from ..errors import ToolError, UsageError
from ..sim.natscluster import NatsCluster
from .runs import summary

KEY, KID = bytes(range(16)), bytes.fromhex("a1b2c3d4")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs, at least 5 (default 5)")
    parser.add_argument("--outcomes", type=int, default=300, help="outcomes forwarded per run (default 300)")
    parser.add_argument("--queries", type=int, default=100, help="queries per run (default 100)")


def _fill(db: Path, count: int, seed: int) -> None:
    """count committed outcomes with spread-out fingerprints, through the real core."""
    device = DeviceKey("bench", KID, KEY)
    store = OutcomeStore(db)
    core = GatewayCore({KID: device}, store)
    ccm = CCM(KEY)
    rng = random.Random(seed)
    for counter in range(count):
        fp = bytes(rng.randrange(256) for _ in range(16))
        pt = spec.encode_outcome(spec.FULL, 1764201600, 3, 1, rng.randrange(5), 200, fp, [[0, 200]])
        core.receive("bench", bytes(spec.seal(ccm, KID, counter, pt, spec.UPLINK_IV)))
        if counter % 64 == 63:
            core.flush()
    core.flush()
    store.close()


async def _bare_publish(js, messages: list[tuple[str, bytes]], batch: int, tag: str) -> None:
    """The same messages, published the way the forwarder does: a batch of records at a
    time, each record's messages one after another, every ack awaited."""
    per_record = 8
    for start in range(0, len(messages), batch * per_record):
        chunk = messages[start:start + batch * per_record]

        async def record(i: int) -> None:
            for j in range(per_record):
                subject, data = chunk[i * per_record + j]
                await js.publish(subject, data, headers={"Nats-Msg-Id": f"{tag}-{start + i * per_record + j}"})
        await asyncio.gather(*(record(i) for i in range(len(chunk) // per_record)))


async def _bench(workdir: Path, runs: int, outcomes: int, queries: int, progress: Console) -> dict:
    batch = min(64, outcomes)
    outcomes = -(-outcomes // batch) * batch
    progress.print(f"starting a 3-node NATS cluster and filling three gateways' databases ({outcomes * runs} outcomes)")
    cluster = NatsCluster(workdir / "nats").start()
    sites = [provision_site(f"site{i}", workdir / f"site{i}.site") for i in (1, 2, 3)]
    for s in sites:
        add_to_sites_file(workdir / "sites.json", s)
    peers = load_sites(workdir / "sites.json")
    feds = []
    try:
        for i, site in enumerate(sites):
            db = workdir / f"{site.name}.db"
            _fill(db, outcomes * runs, seed=i)
            bus = NatsBus(cluster.urls(), site.name)
            # One forwarding batch divides a run's outcomes, so every run moves exactly its slice.
            feds.append(Federation(site, Journal(db), bus, peers, Settings(k=2, m=1, forward_batch=batch)))
        for fed in feds:
            await fed.start(background=False)  # connected and registered; nothing read yet
        await _until(lambda: all(f.bus.connected for f in feds), 30)
        nc = await nats.connect(servers=cluster.urls())
        js = nc.jetstream()
        sender = feds[0]
        forward: dict[str, list[float]] = {"subject": [], "baseline": []}
        bytes_per_outcome = []
        # Forwarding, while no owner reads yet: in a clinic the owners run on other machines,
        # and here they would share this process's one event loop with the sender.
        for r in range(runs):
            b0 = sender.stats["bytes_published"]
            t0 = time.perf_counter()
            moved = 0
            while moved < outcomes:
                step = await sender.forward_once()
                if not step:
                    raise ToolError(f"the sender ran out of outcomes after {moved} of {outcomes} in run {r + 1}")
                moved += step
            forward["subject"].append(moved / (time.perf_counter() - t0))
            per = (sender.stats["bytes_published"] - b0) / moved
            bytes_per_outcome.append(per)
            messages = [(f"qis.rec.bench.{i % 128}", os.urandom(int(per // 8))) for i in range(moved * 8)]
            t0 = time.perf_counter()
            await _bare_publish(js, messages, sender.settings.forward_batch, f"bare-{r}")
            forward["baseline"].append(moved / (time.perf_counter() - t0))
            progress.print(f"forwarding run {r + 1}/{runs}: {forward['subject'][-1]:,.0f} outcomes/s "
                           f"vs bare {forward['baseline'][-1]:,.0f}")
        for fed in feds[1:]:
            while await fed.forward_once():
                pass
        # The owners take their shards and replay the stream: a new owner's rebuild.
        expected = 3 * outcomes * runs * spec.PROFILES["full"].fingerprint_tables * 2  # records x tables x R
        t0 = time.perf_counter()
        for fed in feds:
            await fed.reconcile()
        applied = lambda: sum(f.stats["records_applied"] for f in feds)  # noqa: E731
        await _until(lambda: applied() >= expected, 120, f"owners applied fewer than {expected} records")
        replay = applied() / (time.perf_counter() - t0)
        progress.print(f"owners rebuilt {applied():,} record applications at {replay:,.0f}/s; query runs start")
        responder = await nats.connect(servers=cluster.urls())

        async def echo(msg) -> None:
            await msg.respond(msg.data[: 400])
        await responder.subscribe("bench.echo", cb=echo)
        latency: dict[str, list[float]] = {"subject": [], "baseline": []}
        fps = [bytes.fromhex(r["fingerprint"]) for r in _outcomes(workdir / "site2.db", queries)]
        for r in range(runs):  # queries, interleaved one by one with bare request-replies
            for fp in fps:
                addrs = route.addresses(1, fp, "full")
                t0 = time.perf_counter()
                status, _ = await sender.ask(addrs)
                latency["subject"].append(time.perf_counter() - t0)
                if status != spec.ANSWERED:
                    raise ToolError(f"a query was not answered (status {status}): the bench measures answered queries")
                t0 = time.perf_counter()
                await nc.request("bench.echo", os.urandom(200), timeout=5)
                latency["baseline"].append(time.perf_counter() - t0)
            progress.print(f"query run {r + 1}/{runs}: p50 "
                           f"{1e3 * statistics.median(latency['subject'][-len(fps):]):.1f} ms")
        await nc.close()
        await responder.close()
    finally:
        for fed in feds:
            await fed.stop()
            fed.journal.close()
        cluster.stop()
    runs_fwd = [s / b for s, b in zip(forward["subject"], forward["baseline"])]
    per_run = len(fps)
    p50 = [statistics.median(latency["subject"][i * per_run:(i + 1) * per_run]) /
           statistics.median(latency["baseline"][i * per_run:(i + 1) * per_run]) for i in range(runs)]
    p99 = [_p99(latency["subject"][i * per_run:(i + 1) * per_run]) /
           _p99(latency["baseline"][i * per_run:(i + 1) * per_run]) for i in range(runs)]
    return {"forward_outcomes_per_s": summary(forward["subject"]), "bare_outcomes_per_s": summary(forward["baseline"]),
            "forward_ratio": summary(runs_fwd),
            "query_p50_ms": summary([1e3 * statistics.median(latency["subject"][i * per_run:(i + 1) * per_run])
                                     for i in range(runs)]),
            "query_p99_ms": summary([1e3 * _p99(latency["subject"][i * per_run:(i + 1) * per_run]) for i in range(runs)]),
            "bare_request_p50_ms": summary([1e3 * statistics.median(latency["baseline"][i * per_run:(i + 1) * per_run])
                                            for i in range(runs)]),
            "query_p50_ratio": summary(p50), "query_p99_ratio": summary(p99),
            "bus_bytes_per_outcome": summary(bytes_per_outcome), "owner_replay_applications_per_s": replay}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _outcomes(db: Path, n: int) -> list[dict]:
    store = OutcomeStore(db, readonly=True)
    try:
        return list(store.outcomes())[:n]
    finally:
        store.close()


async def _until(predicate, timeout: float, what: str = "the gateways did not connect to the cluster") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ToolError(f"{what} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


def run(args: argparse.Namespace) -> int:
    if args.runs < 5:
        raise UsageError("--runs must be at least 5 (the median of 5 interleaved runs is the least we report)")
    progress = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="qis-bench-fed-") as tmp:
        result = asyncio.run(_bench(Path(tmp), args.runs, args.outcomes, args.queries, progress))
    table = Table(title=f"qis bench federation: 3-node NATS cluster, {args.runs} interleaved runs, median [min-max]")
    for col in ("measurement", "subject", "baseline", "ratio"):
        table.add_column(col, justify="left" if col == "measurement" else "right")

    def fmt(s: dict, spec_: str) -> str:
        return f"{s['median']:{spec_}} [{s['min']:{spec_}}-{s['max']:{spec_}}]"
    table.add_row("forwarded outcomes/s (vs a bare publish loop)", fmt(result["forward_outcomes_per_s"], ",.0f"),
                  fmt(result["bare_outcomes_per_s"], ",.0f"), fmt(result["forward_ratio"], ".2f"))
    table.add_row("query latency p50, ms (vs a bare request-reply)", fmt(result["query_p50_ms"], ".1f"),
                  fmt(result["bare_request_p50_ms"], ".2f"), fmt(result["query_p50_ratio"], ".1f"))
    table.add_row("query latency p99, ms", fmt(result["query_p99_ms"], ".1f"), "", fmt(result["query_p99_ratio"], ".1f"))
    table.add_row("bus bytes per outcome", fmt(result["bus_bytes_per_outcome"], ",.0f"), "", "")
    table.add_row("owners' replay, record applications/s", f"{result['owner_replay_applications_per_s']:,.0f}", "", "")
    Console().print(table)
    print(json.dumps(result))
    return 0
