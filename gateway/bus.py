"""The federation's bus: in process for one clinic, a NATS JetStream cluster for many.

Both offer what gateway.federation needs and nothing more: publish a message to a record
subject (acknowledged once the bus has it durably), the live members, the ownership plan,
a subscription to a unit's messages (a shard, or the part of one whose subjects begin
with the same slot bits) from a stream sequence on, and request/reply between members.

NATS (docs/PROTOCOL.md, "Federation"):
- One stream, QIS_RECORDS, subjects ``qis.rec.<domain>.<version>.<table>.<shard>.<six slot bits>``,
  replicated (R = min(3, cluster size)) and kept, with a duplicate window of a day: a
  re-publish with the same message id (after a crash) is dropped by the server.
- Membership is a key-value bucket, qis_members, whose entries expire after ttl_s; each
  gateway puts its own every heartbeat_s. The live members are the keys present. The
  ownership plan is the one key of the bucket qis_plan; the records per subject, which
  the plan is made from, come from the stream's own counts.
- A unit's owner reads its subjects with an ordered consumer (one filter subject, a
  wildcard, per consumer: nats-server 2.9 ignores filter_subjects) from a sequence on: the
  stream is the truth, the owner's aggregates a function of it. An ephemeral consumer
  lives on one node and dies with it; the owner notices (last_seq() of the unit's
  subjects is ahead of what it applied, and nothing moved) and reads on from where it was.
- Nothing on the way out waits long for a cluster that is gone: unsubscribing and leaving
  the membership are given a second, then the connection is closed.
- Questions to owners go to ``qis.ask.<member>`` as requests; the replies are signed.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig, StreamConfig

from .errors import GatewayError

log = logging.getLogger("qis.gateway.bus")
STREAM = "QIS_RECORDS"
SUBJECTS = "qis.rec.>"
MEMBERS = "qis_members"
PLAN = "qis_plan"
Handler = Callable[[int, bytes], Awaitable[None]]  # (stream sequence, data)


def record_subject(subject_key: str) -> str:
    return f"qis.rec.{subject_key}"


def unit_filter(filter_key: str) -> str:
    return f"qis.rec.{filter_key}"


def matches(filter_key: str, subject_key: str) -> bool:
    """Whether a subject (after "qis.rec.") is one of a filter's (NATS: ">" ends a wildcard)."""
    return subject_key.startswith(filter_key[:-1]) if filter_key.endswith(".>") else subject_key == filter_key


def shard_of_subject(subject: str) -> str:
    """The shard key of a record subject (its slot bits dropped)."""
    return ".".join(subject.split(".")[2:6])


class BusUnavailable(GatewayError):
    """The bus cannot be reached or did not confirm in time (the caller retries later)."""


def reraise_if_cancelled(exc: BaseException) -> None:
    """A loop that retries on errors must still stop when cancelled, even when a library
    turned the cancellation into an error of its own (else shutdown waits for ever)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


class LocalBus:
    """One gateway, no broker: it is the only member and owns every shard; publishing hands
    the message straight to the subscribers whose unit the subject belongs to."""

    def __init__(self, member: str) -> None:
        self.member = member
        self._handlers: dict[str, tuple[str, Handler]] = {}
        self._seq = 0
        self._plan: bytes | None = None

    async def start(self) -> None:
        return None

    async def members(self) -> list[str]:
        return [self.member]

    async def last_seq(self, filter_key: str) -> int:
        return self._seq

    async def get_plan(self) -> bytes | None:
        return self._plan

    async def put_plan(self, data: bytes) -> None:
        self._plan = data

    async def subject_loads(self) -> dict[str, float]:
        return {}

    async def publish(self, subject_key: str, data: bytes, msg_id: str) -> None:
        self._seq += 1
        for filter_key, handler in list(self._handlers.values()):
            if matches(filter_key, subject_key):
                await handler(self._seq, data)

    async def subscribe(self, unit_key: str, filter_key: str, start_seq: int, handler: Handler) -> None:
        self._handlers[unit_key] = (filter_key, handler)

    async def unsubscribe(self, unit_key: str) -> None:
        self._handlers.pop(unit_key, None)

    async def serve(self, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        return None

    async def request(self, member: str, data: bytes, timeout: float) -> bytes:
        raise BusUnavailable(f"no member {member} on a local bus")

    async def close(self) -> None:
        self._handlers.clear()


class NatsBus:
    """The bus over a NATS JetStream cluster (nats-py)."""

    def __init__(self, urls: list[str], member: str, heartbeat_s: float = 1.5, ttl_s: float = 6.0,
                 replicas: int = 3, publish_timeout_s: float = 5.0) -> None:
        self.urls = urls
        self.member = member
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self.replicas = replicas
        self.publish_timeout_s = publish_timeout_s
        self._nc: nats.NATS | None = None
        self._js = None
        self._kv = None
        self._plan_kv = None
        self._subs: dict[str, object] = {}
        self._tasks: list[asyncio.Task] = []
        self._service = None
        self.connected = False

    async def start(self) -> None:
        """Connect (retrying in the background while the cluster is down) and keep this
        member's heartbeat going."""
        self._tasks.append(asyncio.create_task(self._keep_connected()))

    async def _keep_connected(self) -> None:
        delay = 0.5
        while True:
            if self._nc is None or self._nc.is_closed:
                try:
                    await self._connect()
                    delay = 0.5
                except Exception as exc:  # noqa: BLE001 - any failure: the cluster is not there yet
                    reraise_if_cancelled(exc)
                    log.warning("NATS not reachable (%s); retrying in %.1fs", exc, delay)
                    self.connected = False
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
            try:
                await self._kv.put(self.member, json.dumps({"t": time.time()}).encode())
                self.connected = True
            except Exception as exc:  # noqa: BLE001 - a node down, a leader election: try again
                reraise_if_cancelled(exc)
                log.info("heartbeat failed: %s", exc)
                self.connected = False
            await asyncio.sleep(self.heartbeat_s)

    async def _connect(self) -> None:
        nc = await nats.connect(servers=self.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                connect_timeout=2, allow_reconnect=True)
        js = nc.jetstream(timeout=self.publish_timeout_s)
        replicas = self.replicas
        try:
            await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECTS], num_replicas=replicas,
                                             duplicate_window=24 * 3600.0))
        except nats.js.errors.BadRequestError:
            pass  # it exists (with the same subjects): another gateway made it
        try:
            kv = await js.create_key_value(KeyValueConfig(bucket=MEMBERS, ttl=self.ttl_s, replicas=replicas))
        except nats.js.errors.BadRequestError:
            kv = await js.key_value(MEMBERS)
        try:
            plan_kv = await js.create_key_value(KeyValueConfig(bucket=PLAN, replicas=replicas))
        except nats.js.errors.BadRequestError:
            plan_kv = await js.key_value(PLAN)
        self._nc, self._js, self._kv, self._plan_kv = nc, js, kv, plan_kv
        if self._service is not None:
            await self._nc.subscribe(f"qis.ask.{self.member}", cb=self._service)
        log.info("connected to NATS %s as %s", nc.connected_url.netloc if nc.connected_url else self.urls, self.member)

    async def members(self) -> list[str]:
        if self._kv is None:
            return []
        try:
            return sorted(set(await self._kv.keys()))
        except nats.js.errors.NoKeysError:
            return []
        except Exception as exc:  # noqa: BLE001
            raise BusUnavailable(f"membership unreadable: {exc}") from exc

    async def get_plan(self) -> bytes | None:
        if self._plan_kv is None:
            return None
        try:
            return (await self._plan_kv.get("plan")).value
        except nats.js.errors.KeyNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise BusUnavailable(f"plan unreadable: {exc}") from exc

    async def put_plan(self, data: bytes) -> None:
        if self._plan_kv is None:
            raise BusUnavailable("not connected to NATS")
        try:
            await self._plan_kv.put("plan", data)
        except Exception as exc:  # noqa: BLE001
            raise BusUnavailable(f"plan not written: {exc}") from exc

    async def subject_loads(self) -> dict[str, float]:
        """Records held per shard key, from the stream's count per subject."""
        if self._js is None:
            raise BusUnavailable("not connected to NATS")
        try:
            info = await self._js.stream_info(STREAM, subjects_filter=SUBJECTS)
        except Exception as exc:  # noqa: BLE001
            raise BusUnavailable(f"stream counts unreadable: {exc}") from exc
        loads: dict[str, float] = {}
        for subject, count in (info.state.subjects or {}).items():
            key = shard_of_subject(subject)
            loads[key] = loads.get(key, 0.0) + count
        return loads

    async def publish(self, subject_key: str, data: bytes, msg_id: str) -> None:
        if self._js is None:
            raise BusUnavailable("not connected to NATS")
        try:
            await self._js.publish(record_subject(subject_key), data, headers={"Nats-Msg-Id": msg_id})
        except Exception as exc:  # noqa: BLE001 - timeouts, no responders, a node down
            raise BusUnavailable(f"publish not confirmed: {exc}") from exc

    async def subscribe(self, unit_key: str, filter_key: str, start_seq: int, handler: Handler) -> None:
        if self._js is None:
            raise BusUnavailable("not connected to NATS")

        async def on_message(msg) -> None:
            await handler(msg.metadata.sequence.stream, msg.data)

        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start_seq))
        try:
            self._subs[unit_key] = await self._js.subscribe(unit_filter(filter_key), cb=on_message,
                                                            ordered_consumer=True, config=config,
                                                            deliver_policy=DeliverPolicy.BY_START_SEQUENCE)
        except Exception as exc:  # noqa: BLE001
            raise BusUnavailable(f"cannot read unit {unit_key}: {exc}") from exc

    async def unsubscribe(self, unit_key: str) -> None:
        sub = self._subs.pop(unit_key, None)
        if sub is not None:
            try:
                await asyncio.wait_for(sub.unsubscribe(), 1.0)
            except Exception as exc:  # noqa: BLE001 - the node or the connection may be gone
                log.info("unsubscribe %s: %s", unit_key, exc)

    async def last_seq(self, filter_key: str) -> int:
        """The stream sequence of the newest message of a unit's subjects (0: none)."""
        if self._js is None:
            raise BusUnavailable("not connected to NATS")
        try:
            return (await self._js.get_last_msg(STREAM, unit_filter(filter_key))).seq
        except nats.js.errors.NotFoundError:
            return 0
        except Exception as exc:  # noqa: BLE001
            raise BusUnavailable(f"unit {filter_key} unreadable: {exc}") from exc

    async def serve(self, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        """Answer requests to this member with handler(request) -> reply."""
        async def on_request(msg) -> None:
            try:
                reply = await handler(msg.data)
            except Exception:  # noqa: BLE001 - a bad request gets no reply, never a crash
                log.exception("request from the bus failed")
                return
            await msg.respond(reply)

        self._service = on_request
        if self._nc is not None and self._nc.is_connected:
            await self._nc.subscribe(f"qis.ask.{self.member}", cb=on_request)

    async def request(self, member: str, data: bytes, timeout: float) -> bytes:
        if self._nc is None or not self._nc.is_connected:
            raise BusUnavailable("not connected to NATS")
        try:
            return (await self._nc.request(f"qis.ask.{member}", data, timeout=timeout)).data
        except Exception as exc:  # noqa: BLE001
            raise BusUnavailable(f"{member} did not answer: {exc}") from exc

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._subs.clear()  # closing the connection ends them; the server drops ephemeral consumers
        if self._kv is not None:
            try:
                await asyncio.wait_for(self._kv.delete(self.member), 1.0)
            except Exception as exc:  # noqa: BLE001 - leaving anyway; the entry expires
                log.info("could not leave membership: %s", exc)
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.close(), 2.0)
            except Exception as exc:  # noqa: BLE001
                log.info("closing the NATS connection: %s", exc)
