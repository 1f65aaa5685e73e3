"""What the pipelines that sign guest events off the event loop share: submission order, room, drain, close.

:class:`~.threaded.ThreadedPipeline` (native signing threads) and
:class:`~.parallel.ParallelPipeline` (worker processes) both hand each batch to
something that signs it while the loop goes on, and both must put the results
into the sink queues in the order the batches were submitted, so each source's
events reach every sink with increasing sequence numbers. An :class:`OffloadPipeline`
keeps those entries in order, bounds how many events are in flight
(``max_pending``), puts one entry at a time with the subclass's :meth:`~OffloadPipeline._put`,
and counts an entry as done only once its events are in the queues (or it failed), which is
what :meth:`~OffloadPipeline.drain` waits for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from ..errors import SinkError
from .queue import SinkQueue
from .router import Pipeline
from .stamp import Stamper
from .stats import PipelineStats

__all__ = ["OffloadPipeline"]

log = logging.getLogger("hoststamp.pipeline")


class _Entry(Protocol):
    #: the events it stands for, counted against ``max_pending``
    @property
    def size(self) -> int: ...


E = TypeVar("E", bound=_Entry)


class OffloadPipeline(Pipeline, Generic[E]):
    """A Pipeline whose guest batches are signed elsewhere and reach the queues in submission order."""

    def __init__(self, stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats | None = None, *,
                 max_pending: int = 8192) -> None:
        super().__init__(stamper, queues, stats)
        self.max_pending = max_pending
        #: entries in submission order, until their events are in the queues
        self._order: deque[E] = deque()
        self._pending = 0
        self._room = asyncio.Event()
        self._room.set()
        self._more = asyncio.Event()
        self._enqueuer: asyncio.Task[None] | None = None
        self._closed = False
        #: entries submitted, and entries in the queues (or failed), for :meth:`drain`
        self._submitted = 0
        self._done = 0
        self._progress = asyncio.Event()

    async def _wait_for_room(self) -> None:
        """Wait while ``max_pending`` events are in flight; SinkError once the pipeline is closed."""
        while self._pending >= self.max_pending and not self._closed:
            self._room.clear()
            await self._room.wait()
        if self._closed:
            raise SinkError("the signing pipeline is closed")

    def _push(self, entry: E) -> None:
        """``entry`` is submitted: it goes into the queues after every entry before it."""
        self._order.append(entry)
        self._pending += entry.size
        self._submitted += 1
        self._more.set()
        if self._enqueuer is None:
            self._enqueuer = asyncio.get_running_loop().create_task(self._enqueue(),
                                                                    name=f"{type(self).__name__} enqueue")

    async def _put(self, entry: E) -> None:
        """Wait for ``entry``'s events and put them into its queues, settling its answer (or fail it)."""
        raise NotImplementedError

    def _fail(self, entry: E, exc: SinkError) -> None:
        """Settle ``entry``'s answer with ``exc``: it will not reach the queues."""
        raise NotImplementedError

    async def _enqueue(self) -> None:
        order = self._order
        while True:
            if not order:
                self._more.clear()
                await self._more.wait()
                continue
            entry = order[0]
            await self._put(entry)
            order.popleft()
            self._pending -= entry.size
            self._room.set()
            self._done += 1
            self._progress.set()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout``) until every guest event submitted so far is in its queues (not for what is
        submitted meanwhile: a reload must not wait for the traffic to stop); call before closing them. True
        when it got there."""
        target = self._submitted
        try:
            async with asyncio.timeout(timeout):
                while self._done < target:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    async def _close_order(self, timeout: float | None) -> None:
        """Put what is signed into the queues (for up to ``timeout``), then stop taking entries; what is left
        is failed (its senders send it again)."""
        if not await self.drain(timeout):
            log.warning("%d guest events still being signed at shutdown; their senders will send them again",
                        self._pending)
        self._closed = True
        self._room.set()
        if self._enqueuer is not None:
            self._enqueuer.cancel()
            await asyncio.gather(self._enqueuer, return_exceptions=True)
            self._enqueuer = None
        for entry in self._order:
            self._fail(entry, SinkError("the pipeline closed before this batch reached the queues"))
        self._order.clear()
