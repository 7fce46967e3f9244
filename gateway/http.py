"""The gateway's HTTP endpoint on localhost (aiohttp): for the clinic's tools, not the world.

  GET  /status      the core's and the federation's counters, as JSON
  GET  /metrics     the same counters in the Prometheus text format (prometheus-client)
  POST /query       {"domain": 1, "fingerprint": "<hex>", "profile": "full", "probe": 0}
                    -> the answer as JSON (the same combination a device's query gets)
  GET  /aggregates  the aggregates this gateway owns, per address (for checks and demos)

It binds to 127.0.0.1 only; a request body is at most 4 KB.
"""
from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from qis.edge.frame import PROFILES

from . import route
from .federation import Federation

STATUS_NAMES = {0: "answered", 1: "too few similar cases", 2: "unknown fingerprint spec", 3: "partial", 4: "unavailable"}


class _Collector:
    """Exposes the numeric counters of the status dict at scrape time."""

    def __init__(self, status: Callable[[], dict]) -> None:
        self.status = status

    def collect(self):
        status = self.status()
        for section in ("gateway", "federation"):
            for name, value in status.get(section, {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    gauge = name in ("owned_units", "split_shards", "addresses")
                    family = GaugeMetricFamily if gauge else CounterMetricFamily
                    yield family(f"qis_{section}_{name}", f"{section} {name.replace('_', ' ')}", value=value)


class HttpEndpoint:
    def __init__(self, federation: Federation, status: Callable[[], dict], port: int) -> None:
        self.federation = federation
        self.status = status
        self.port = port
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(status))
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=4096)
        app.add_routes([web.get("/status", self._status), web.get("/metrics", self._metrics),
                        web.post("/query", self._query), web.get("/aggregates", self._aggregates)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, shutdown_timeout=1.0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port chosen when 0 was asked

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain", charset="utf-8")

    async def _aggregates(self, request: web.Request) -> web.Response:
        # An address's key, or for a part of a split shard "<address key>/<index>.<parts>".
        return web.json_response({(p.address.key if p.parts == 1 else f"{p.address.key}/{p.index}.{p.parts}"):
                                  agg.wire() for p, agg in sorted(self.federation.aggregates.items())}, dumps=_dumps)

    async def _query(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            domain, profile, probe = int(body["domain"]), str(body.get("profile", "full")), int(body.get("probe", 0))
            fingerprint = bytes.fromhex(body["fingerprint"])
            prof = PROFILES[profile]
            if len(fingerprint) != prof.fingerprint_len or probe not in (0, 1):
                raise ValueError("size")
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='want {"domain": int, "fingerprint": hex of the profile\'s size, '
                                          '"profile": "compact"|"full", "probe": 0|1}') from None
        try:
            addrs = route.addresses(domain, fingerprint, profile, probe)
        except route.UnknownSpec as exc:
            return web.json_response({"status": 2, "status_name": STATUS_NAMES[2], "reason": str(exc)})
        status, answer = await self.federation.ask(addrs)
        return web.json_response({"status": status, "status_name": STATUS_NAMES[status], **answer.as_dict()})


def _dumps(value: object) -> str:
    import json

    return json.dumps(value, default=lambda o: o.hex() if isinstance(o, bytes) else str(o))
