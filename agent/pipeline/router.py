"""The pipeline proper: stamp and sign once, then fan out to every sink's queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..futures import forward
from ..model import Event, Reading
from .queue import BatchReceipt, Receipt, SinkQueue
from .stamp import Stamper
from .stats import PipelineStats

__all__ = ["GuestAnswer", "GuestBatch", "Pipeline"]

log = logging.getLogger("hoststamp.pipeline")


class GuestAnswer(Protocol):
    """What a pipeline returns for a batch of guest events: a future with :meth:`GuestBatch.outcome`'s answer."""

    @property
    def future(self) -> asyncio.Future[Any]: ...


class GuestBatch:
    """What became of a batch of guest events: refused at once, or handed to every sink queue.

    :meth:`outcome` completes when the sinks have taken them, with None when
    every event was taken, else a list with an entry per event in batch
    order: True (taken), False (dropped by an overflow policy), an
    :class:`~agent.errors.Undeliverable` (a sink can never take it) or the
    exception that kept the host from stamping it.
    """

    __slots__ = ("receipt", "results")

    def __init__(self, receipt: BatchReceipt, results: Sequence[Event | Exception] | None) -> None:
        self.receipt = receipt
        #: the stamping results when some were refused (else None: all were signed)
        self.results = results

    @property
    def future(self) -> asyncio.Future[Any]:
        """Completes with :meth:`outcome`'s answer (a new future when some events were refused)."""
        if self.results is None:
            return self.receipt.future
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        results = self.results
        self.receipt.future.add_done_callback(lambda f: forward(f, fut, lambda taken: _merge(taken, results)))
        return fut

    async def outcome(self) -> list[Any] | None:
        return await self.future  # type: ignore[no-any-return]

    def watch(self, on_refusal: Callable[[int, Any], None], offset: int = 0) -> None:
        """Have ``on_refusal(i, why)`` called as soon as event ``i`` (counted from ``offset``) is known not to be
        taken: at once with the exception that kept the host from stamping it, or with why a sink dropped it (False,
        or an :class:`~agent.errors.Undeliverable`), maybe long before :attr:`future` completes."""
        results = self.results
        if results is None:
            self.receipt.watch(lambda j, why: on_refusal(offset + j, why))
            return
        signed_at = []
        for i, r in enumerate(results):
            if isinstance(r, Exception):
                on_refusal(offset + i, r)
            else:
                signed_at.append(offset + i)
        self.receipt.watch(lambda j, why: on_refusal(signed_at[j], why))


    def progress(self, on_progress: Callable[[int], None], offset: int = 0) -> None:
        """Have ``on_progress(n)`` called as more of the batch's first events are settled by every sink (see
        :meth:`BatchReceipt.progress`): ``n`` counted in the batch from ``offset``, the events the host could
        not stamp among them (told to :meth:`watch` already)."""
        results = self.results
        if results is None:
            self.receipt.progress(lambda k: on_progress(offset + k))
            return
        signed_at = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        self.receipt.progress(lambda k: on_progress(offset + signed_at[k]))  # k < len: the last completes it


def _merge(taken: list[Any] | None, results: Sequence[Event | Exception]) -> list[Any]:
    """The sinks' answer for the signed events, with the stamping errors put back in their places."""
    signed = iter(taken or ())
    return [r if isinstance(r, Exception) else next(signed, True) for r in results]


class Pipeline:
    """Readings and guest events in; signed events into each sink's bounded queue."""

    def __init__(self, stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats | None = None) -> None:
        self.stamper = stamper
        self.queues = list(queues)
        self.stats = stats if stats is not None else PipelineStats()

    def _stamp(self, reading: Reading) -> Event | None:
        event, problem = self.stamper.stamp_or_error(reading)
        if problem is not None:  # data a probe produced that JSON cannot carry: it became an error reading
            self.stats.rejected += 1
            log.error("probe %s produced unserializable data: %s", reading.probe, problem)
        return event

    async def submit(self, reading: Reading) -> Event | None:
        """Stamp, sign and enqueue one reading on every sink."""
        event = self._stamp(reading)
        if event is None:
            return None
        self.stats.signed += 1
        for q in self.queues:
            await q.put(event)
        return event

    async def submit_many(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            await self.submit(r)

    async def submit_guest(self, event: Mapping[str, Any], hostpeer: str) -> Receipt:
        """Stamp a guest's event and enqueue it; the receipt completes when every sink took it."""
        signed = self.stamper.stamp_guest(event, hostpeer)
        self.stats.signed += 1
        receipt = Receipt(len(self.queues))
        for q in self.queues:
            await q.put(signed, receipt)
        return receipt

    async def submit_guests(self, events: Sequence[Mapping[str, Any]], hostpeer: str,
                            frames: Sequence[bytes] | None = None,
                            on_answer: Callable[[Any], None] | None = None) -> GuestAnswer:
        """Stamp a batch of one peer's events and enqueue them in order.

        The event dicts become the pipeline's (they are changed in place). ``frames`` (the events as
        received) is for pipelines that stamp elsewhere; this one has the events. ``on_answer`` is given the
        answer before the events go into the queues (a full queue may hold them back), so that a caller can
        watch it from the start (:meth:`GuestBatch.watch`, :meth:`GuestBatch.progress`).
        """
        results = self.stamper.stamp_guests(events, hostpeer, owned=True)
        return await self._enqueue_guests(results, on_answer=on_answer)

    async def _enqueue_guests(self, results: Sequence[Event | Exception],
                              queues: Sequence[SinkQueue] | None = None,
                              on_answer: Callable[[GuestBatch], None] | None = None) -> GuestBatch:
        """Put the signed ones of ``results`` into ``queues`` (default: the pipeline's, as they are now);
        ``on_answer`` gets the answer first."""
        queues = self.queues if queues is None else queues
        signed = [r for r in results if not isinstance(r, Exception)]
        refused = len(results) - len(signed)
        self.stats.signed += len(signed)
        self.stats.rejected += refused
        receipt = BatchReceipt(signed, len(queues))
        answer = GuestBatch(receipt, results if refused else None)
        if on_answer is not None:
            on_answer(answer)
        for q in queues:
            await q.put_many(signed, receipt)
        return answer

    # pipelines that sign elsewhere (threads, processes) override these; this one has nothing in flight

    async def start(self) -> int:
        """Start what signs beside the event loop; returns how many threads or processes that is."""
        return 0

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every guest event submitted so far is in its queues; True when it got there."""
        return True

    async def aclose(self, timeout: float | None = None) -> None:
        """Put what is being signed into the queues (for up to ``timeout``), then stop signing."""

    def close(self) -> None:
        for q in self.queues:
            q.close()
