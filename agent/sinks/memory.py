"""An in-memory sink for tests and embedding: keeps what it is sent; can be told to fail."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import SinkError
from ..model import Event
from .base import Sink, SinkContext

__all__ = ["MemorySink"]


class MemorySink(Sink):
    scheme = "memory"

    def __init__(self, target: str = "", options: object = None, ctx: SinkContext | None = None) -> None:
        super().__init__(target, options, ctx or SinkContext())
        self.events: list[Event] = []
        self.flushes = 0
        self.closed = False
        #: the next this-many sends raise SinkError (a sink that is down)
        self.fail_sends = 0
        self.fail_opens = 0

    async def open(self) -> None:
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise SinkError("memory: refused to open")

    async def send(self, batch: Sequence[Event]) -> None:
        if self.fail_sends > 0:
            self.fail_sends -= 1
            raise SinkError("memory: down")
        self.events.extend(batch)

    async def flush(self) -> None:
        self.flushes += 1

    async def aclose(self) -> None:
        await self.flush()
        self.closed = True
