"""Moves batches from one sink's queue into the sink, retrying what fails."""

from __future__ import annotations

import logging
import math
import random
import time

import anyio

from ..errors import AgentError, SinkError
from ..model import Event
from ..sinks.base import Sink
from .queue import Receipt, SinkQueue
from .spoolqueue import SpoolQueue
from .stats import SinkStats

__all__ = ["SinkWorker", "backoff_delays"]

log = logging.getLogger("hoststamp.sink")

#: seconds a closing worker gives its sink to confirm (flush) and close: a sink that is down must not hold
#: shutdown hostage
CLOSE_TIMEOUT = 5.0


def backoff_delays(base: float = 0.1, cap: float = 10.0) -> _Backoff:
    return _Backoff(base, cap)


class _Backoff:
    """Full-jitter exponential backoff: sleep U(0, min(cap, base·2^n))."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        d = random.uniform(0, min(self.cap, self.base * (2**self.attempt)))
        self.attempt = min(self.attempt + 1, 30)
        return d

    def reset(self) -> None:
        self.attempt = 0


class SinkWorker:
    """One task per sink: get a batch, send it (retrying with backoff), flush when idle."""

    def __init__(
        self,
        sink: Sink,
        queue: SinkQueue,
        stats: SinkStats,
        *,
        batch_max: int = 512,
        flush_interval: float = 1.0,
    ) -> None:
        self.sink = sink
        self.queue = queue
        self.stats = stats
        self.batch_max = batch_max
        self.flush_interval = flush_interval
        self._backoff = backoff_delays()
        self._opened = False
        self._last_flush = time.monotonic()
        self._unflushed: list[Receipt] = []
        #: set once the queue is drained and the sink closed (or the worker was cancelled)
        self.finished = False
        #: events taken from the queue that the sink has not accepted yet (a batch being retried)
        self.holding = 0
        self._dirty = False
        # with a spool, records are trimmed only once the sink has taken and flushed them
        self._spool = queue if isinstance(queue, SpoolQueue) else None
        self._sent_upto = self._spool.handed if self._spool is not None else 0
        stats.dropped = queue.dropped  # the queue counts drops by reason; the stats show the same dict

    async def _open(self) -> None:
        while not self._opened:
            try:
                await self.sink.open()
                self._opened = True
                self.stats.healthy = True
            except SinkError as exc:
                self._failed(exc)
                await anyio.sleep(self._backoff.next())
        self._backoff.reset()

    def _failed(self, exc: AgentError) -> None:
        self.stats.send_errors += 1
        self.stats.healthy = False
        msg = str(exc)
        if msg != self.stats.last_error:
            log.warning("sink %s: %s (retrying)", self.sink.uri, msg)
        self.stats.last_error = msg

    async def run(self) -> None:
        """Until the queue is closed and drained; then flush and close the sink."""
        try:
            await self._open()
            while True:
                batch: list[tuple[Event, Receipt | None]] | None = None
                with anyio.move_on_after(self.flush_interval if self._dirty else math.inf):
                    batch = await self.queue.get_batch(self.batch_max)
                if batch is None:  # idle with unflushed data: make it durable now
                    await self._flush()
                    continue
                if not batch:
                    break
                events = [e for e, _r in batch]
                upto = self._spool.handed if self._spool is not None else 0
                self.holding = len(events)
                while True:
                    try:
                        await self.sink.send(events)
                        break
                    except SinkError as exc:
                        self._failed(exc)
                        await anyio.sleep(self._backoff.next())
                self._backoff.reset()
                self.holding = 0
                self._sent_upto = upto
                self.stats.healthy = True
                self.stats.sent += len(events)
                self.stats.batches += 1
                self._dirty = True
                self._unflushed.extend(r for _e, r in batch if r is not None)
                if ((self._unflushed or self._spool is not None) and len(self.queue) == 0) or (
                    time.monotonic() - self._last_flush >= self.flush_interval
                ):
                    await self._flush()
        finally:
            # one bounded attempt: a sink that is down must not hold shutdown hostage
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True) as closing:
                if self._opened:
                    try:
                        await self._flush(retry=False)
                        await self.sink.aclose()
                    except SinkError as exc:
                        log.error("sink %s: close failed: %s", self.sink.uri, exc)
            if closing.cancelled_caught:
                unconfirmed = getattr(self.sink, "unacked", None)
                what = f"{unconfirmed} events" if isinstance(unconfirmed, int) else "what it took"
                log.error("sink %s: not confirmed within %gs of closing; %s may be lost", self.sink.uri,
                          CLOSE_TIMEOUT, what)
            self.finished = True

    async def _flush(self, *, retry: bool = True) -> None:
        while True:
            try:
                await self.sink.flush()
                break
            except SinkError as exc:
                self._failed(exc)
                if not retry:
                    raise
                await anyio.sleep(self._backoff.next())
        self._last_flush = time.monotonic()
        self._dirty = False
        if self._spool is not None:
            self._spool.commit(self._sent_upto)
        receipts, self._unflushed = self._unflushed, []
        for r in receipts:
            r.done_one()
