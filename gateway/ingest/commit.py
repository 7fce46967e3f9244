"""One commit for all the links of a gateway, and the ACKs back to the link that owns each port.

Rules:
- Whatever any link received in one turn of the event loop is committed together: one
  ``GatewayCore.flush()`` (one fsync) per turn, scheduled by the first link that fed the
  core; a flush also runs once a second, so refusal counts held back reach the disk.
- After the commit every link is handed the same ``Flushed`` and sends the ACKs of the
  ports it owns (``deliver``); a port no link owns any more (a closed serial port) just
  loses its ACKs: the device retransmits and is acknowledged again.
- ``on_commit`` (routing, synthesis, answering queries) is told of every commit that made
  something durable.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from ..core import Flushed, GatewayCore


class Link(Protocol):
    def deliver(self, done: Flushed) -> None:
        """Send the ACKs and answers of done for the ports this link owns."""


class Committer:
    def __init__(self, core: GatewayCore, on_commit: Callable[[Flushed], None] | None = None) -> None:
        self.core = core
        self.on_commit = on_commit
        self.links: list[Link] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tick()

    def _tick(self) -> None:
        self.schedule()
        self._ticker = self._loop.call_later(1.0, self._tick)

    def schedule(self) -> None:
        """Commit at the end of this turn of the loop (once, however many frames came in)."""
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        done = self.core.flush()
        for link in self.links:
            link.deliver(done)
        if self.on_commit is not None and (done.acks or done.committed or done.queries):
            self.on_commit(done)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
