"""A bounded queue per sink with an explicit overflow policy.

``block`` makes producers wait for room (probes slow down, nothing is lost);
``drop_newest`` refuses the arriving event; ``drop_oldest`` evicts the oldest
queued one. Every drop is counted by reason. Entries may carry a
:class:`Receipt`, resolved when the sink has taken the event (used to
acknowledge guests only after their events are safe).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any, Literal

from ..model import Event

__all__ = ["BatchReceipt", "Overflow", "Receipt", "SinkQueue"]

log = logging.getLogger("hoststamp.pipeline")

Overflow = Literal["block", "drop_newest", "drop_oldest"]


class Receipt:
    """Completes when every sink an event was routed to has taken it (or one dropped it)."""

    __slots__ = ("_future", "_pending", "dropped")

    def __init__(self, pending: int) -> None:
        self._future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending = pending
        self.dropped = False
        if pending == 0:
            self._future.set_result(self._result())

    @property
    def future(self) -> asyncio.Future[Any]:
        """The completion itself, for callers that gather many receipts at once."""
        return self._future

    def _result(self) -> Any:
        return not self.dropped

    def done_one(self, event: Event | None = None) -> None:
        """One sink has taken ``event`` for good (or dropped it); a :class:`BatchReceipt` is told which."""
        self._pending -= 1
        if self._pending <= 0 and not self._future.done():
            self._future.set_result(self._result())

    def drop(self, event: Event | None = None, why: Any = False) -> None:
        """One sink will not take ``event`` (``why``: see :meth:`BatchReceipt.drop`)."""
        self.dropped = True
        self.done_one(event)

    def fail(self, exc: BaseException) -> None:
        """A sink stopped without confirming the event, which may or may not have reached it: not taken, not
        dropped for good either (the sender sends it again). Nothing once the receipt completed."""
        if not self._future.done():
            self._future.set_exception(exc)

    async def wait(self) -> Any:
        """True when every sink took the event, False when one dropped it."""
        return await asyncio.shield(self._future)


class BatchReceipt(Receipt):
    """One receipt for a batch of events, each routed to ``sinks`` queues.

    Its future's result is None when every sink took every event, else a list
    with, for each event in batch order, True (taken) or False (dropped by at
    least one sink).
    """

    __slots__ = ("_dropped_ids", "_index", "_left", "_on_progress", "_settled", "_sinks", "_telling", "_watch",
                 "events")

    #: seconds after a partial settlement that :meth:`progress` is told of it, if the batch is not complete by then
    PROGRESS_AFTER = 0.05

    def __init__(self, events: Sequence[Event], sinks: int) -> None:
        self.events = events
        self._sinks = sinks
        #: told of how many of the first events every sink has settled (taken for good or dropped), as that
        #: grows (see :meth:`progress`); per event, the sinks still to settle it, and that count of the first
        self._on_progress: Callable[[int], None] | None = None
        self._left: list[int] | None = None
        self._settled = 0
        self._telling = False
        #: id(event) -> why it was dropped: False (an overflow policy) or an :class:`~agent.errors.Undeliverable`
        self._dropped_ids: dict[int, Any] = {}
        #: told of each event a sink drops, and why, as it happens (see :meth:`watch`)
        self._watch: Callable[[int, Any], None] | None = None
        #: id(event) -> its position, made at the first drop a watcher is told of
        self._index: dict[int, int] | None = None
        super().__init__(len(events) * sinks)

    def _result(self) -> Any:
        if not self.dropped:
            return None
        gone = self._dropped_ids
        return [gone.get(id(e), True) for e in self.events]

    def _position(self, event_id: int) -> int:
        return self._positions()[event_id]

    def _positions(self) -> dict[int, int]:
        """id(event) -> its position, made the first time it is needed."""
        if self._index is None:
            self._index = {id(e): i for i, e in enumerate(self.events)}
        return self._index

    def progress(self, on_progress: Callable[[int], None]) -> None:
        """Have ``on_progress(n)`` called whenever more of the first events are settled by every sink (taken for
        good, or dropped: a drop is told to :meth:`watch` first), ``n`` of them now (at once when some are
        already), so that a sender can be acknowledged for those while later ones still wait (a full spool
        holding the rest back). The future completes as before."""
        self._on_progress = on_progress
        if 0 < self._settled < len(self.events) and not self._future.done():
            on_progress(self._settled)

    def done_one(self, event: Event | None = None) -> None:
        n = self._settled
        if event is None:  # a settlement that does not say which event: the first ones cannot be told apart
            self._settled = -1
        elif n >= 0:
            events = self.events
            if self._left is None and self._sinks == 1 and n < len(events) and events[n] is event:
                n += 1  # the common case: one sink, settling in order; nothing else to keep
            else:
                n = self._settle_out_of_order(event, n)
                if n < 0:
                    super().done_one(event)
                    return
            if n != self._settled:
                self._settled = n
                super().done_one(event)
                if self._on_progress is not None and not self._telling and n < len(events):
                    # told a moment later, not event by event: a batch that completes meanwhile (as nearly
                    # every one does when its sinks keep up) tells nobody, and its sender gets one ack for it
                    self._telling = True
                    loop = asyncio.get_running_loop()
                    if self.PROGRESS_AFTER > 0:
                        loop.call_later(self.PROGRESS_AFTER, self._tell)
                    else:
                        loop.call_soon(self._tell)
                return
        super().done_one(event)

    def _tell(self) -> None:
        self._telling = False
        n = self._settled
        if self._on_progress is not None and 0 < n < len(self.events) and not self._future.done():
            try:
                self._on_progress(n)
            except Exception:  # a watcher's failure must not fail the sink that settled the event
                log.exception("telling of settled events failed")

    def _settle_out_of_order(self, event: Event, n: int) -> int:
        """Count ``event`` settled by one more sink; how many of the first events are settled now (-1: ``event``
        is not one of this batch's, and nothing more can be told before the batch completes)."""
        events = self.events
        left = self._left
        if left is None:  # the first n are settled by every sink
            left = self._left = [0] * n + [self._sinks] * (len(events) - n)
        i = self._positions().get(id(event), -1)
        if i < 0:
            self._settled = -1
            return -1
        left[i] -= 1
        while n < len(left) and left[n] <= 0:
            n += 1
        return n

    def watch(self, on_drop: Callable[[int, Any], None]) -> None:
        """Have ``on_drop(i, why)`` called as soon as a sink drops ``events[i]`` (once per event, before the batch
        completes; at once for those dropped already), so a sender can be told while the rest still waits."""
        self._watch = on_drop
        for i, why in sorted((self._position(d), why) for d, why in self._dropped_ids.items()):
            on_drop(i, why)

    def drop(self, event: Event | None = None, why: Any = False) -> None:
        """A sink will not take ``event``: ``why`` is False (a queue's overflow policy dropped it) or the
        :class:`~agent.errors.Undeliverable` saying it can never be taken. The first reason given stands."""
        first = event is not None and id(event) not in self._dropped_ids
        if first:
            self._dropped_ids[id(event)] = why
        if first and self._watch is not None:  # told before the drop counts as settled (see progress)
            try:
                self._watch(self._position(id(event)), why)
            except Exception:  # a watcher's failure must not fail the put that dropped the event
                log.exception("telling of a dropped event failed")
        super().drop(event)


class SinkQueue:
    """A bounded FIFO of events (with optional receipts) for one sink."""

    def __init__(self, maxsize: int, overflow: Overflow = "block") -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.overflow: Overflow = overflow
        self._items: deque[tuple[Event, Receipt | None]] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._closed = False
        self._closing = asyncio.Event()
        #: drops by reason: ``queue_full`` (drop_newest), ``evicted`` (drop_oldest), ``closed``; and, counted by
        #: others, ``drain_timeout`` (still queued or in hand when the drain's deadline passed and nothing else can
        #: take them: a sink a reload removed, any sink at a shutdown), ``spool_damaged``, ``too_large``, ``refused``
        self.dropped: dict[str, int] = {}
        #: events routed to this queue, those its policy dropped on arrival included (an evicted one was counted
        #: when it came), so that ``enqueued`` = sent + dropped + queued + in the worker's hands
        self.enqueued = 0
        #: puts that had to wait for room (``block``)
        self.blocked = 0

    def __len__(self) -> int:
        return len(self._items)

    def _count(self, reason: str, receipt: Receipt | None, event: Event, why: Any = False) -> None:
        """A drop: the newcomer's (routed here all the same), or an evicted event's (counted when it came);
        ``why`` as :meth:`Receipt.drop` takes it."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if reason != "evicted":
            self.enqueued += 1
        if receipt is not None:
            receipt.drop(event, why)

    def put_nowait(self, event: Event, receipt: Receipt | None = None) -> bool:
        """Enqueue unless the policy says drop; never waits. Returns False if dropped."""
        if self._closed:
            self._count("closed", receipt, event)
            return False
        if len(self._items) >= self.maxsize:
            if self.overflow == "drop_oldest":
                old, old_receipt = self._items.popleft()
                self._count("evicted", old_receipt, old)
            else:  # drop_newest, or block used without waiting
                self._count("queue_full", receipt, event)
                return False
        self._items.append((event, receipt))
        self.enqueued += 1
        self._not_empty.set()
        if len(self._items) >= self.maxsize:
            self._not_full.clear()
        return True

    async def put(self, event: Event, receipt: Receipt | None = None) -> bool:
        """Enqueue; with ``block`` wait for room first."""
        if self.overflow == "block":
            if len(self._items) >= self.maxsize and not self._closed:
                self.blocked += 1
            while len(self._items) >= self.maxsize and not self._closed:
                self._not_full.clear()
                await self._not_full.wait()
        return self.put_nowait(event, receipt)

    async def put_many(self, events: Sequence[Event], receipt: Receipt | None = None) -> None:
        """Enqueue each of ``events`` in order, as :meth:`put` would."""
        items = self._items
        if not self._closed and len(items) + len(events) <= self.maxsize:  # room for all: one step
            items.extend(zip(events, repeat(receipt)))
            self.enqueued += len(events)
            if events:
                self._not_empty.set()
                if len(items) >= self.maxsize:
                    self._not_full.clear()
            return
        block = self.overflow == "block"
        for event in events:
            if block and len(self._items) >= self.maxsize and not self._closed:
                await self.put(event, receipt)
            else:
                self.put_nowait(event, receipt)

    async def get_batch(self, limit: int) -> list[tuple[Event, Receipt | None]]:
        """Wait for at least one entry; return up to ``limit`` (empty once closed and drained)."""
        while not self._items:
            if self._closed:
                return []
            self._not_empty.clear()
            await self._not_empty.wait()
        items = self._items
        if len(items) <= limit:  # all of it: one step
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(limit)]
        if len(self._items) < self.maxsize:
            self._not_full.set()
        return batch

    def requeue_front(self, batch: Sequence[tuple[Event, Receipt | None]]) -> None:
        """Put an unsent batch back at the head (may exceed maxsize briefly)."""
        self._items.extendleft(reversed(batch))
        self._not_empty.set()

    def take_all(self) -> list[tuple[Event, Receipt | None]]:
        """Everything queued, now (what a stopped sink worker leaves)."""
        items = list(self._items)
        self._items.clear()
        self._not_full.set()
        return items

    def close(self) -> None:
        """No more puts; waiting getters and putters wake up."""
        self._closed = True
        self._not_empty.set()
        self._not_full.set()
        self._closing.set()

    async def wait_closed(self) -> None:
        """Until :meth:`close` is called."""
        await self._closing.wait()

    @property
    def closed(self) -> bool:
        return self._closed
