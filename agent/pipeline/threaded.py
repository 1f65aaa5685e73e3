"""Guest events signed in threads beside the event loop, so a receiver can use a second core.

:class:`ThreadedPipeline` is a :class:`~.router.Pipeline` whose guest path
stamps a batch in the loop up to its signatures (:func:`~.guest.prepare_guests`:
sequence numbers, digests), hands the digests to the native signing threads
(:class:`agent._native.edsign.SignPool`), and goes on with the next batch. Those
are threads of the extension's own: they sign a whole batch and build its DSSE
envelopes without ever taking the GIL, and announce finished batches on an
eventfd that the loop watches, so neither side waits for the other. The event
JSON is finished in the loop once the signatures are back, and the batches go
into the sink queues in submission order. Every event is byte for byte what
:class:`~.router.Pipeline` makes.

When the signing threads and the loop's thread are more than the cores this
process may run on, the signing threads run :data:`SIGN_NICE` nice steps below
the agent: the loop thread feeds them and settles what they return, so it gets
a core whenever it has work and the signatures take the rest. At equal priority
the scheduler shares a core evenly between the loop and a signing thread, the
loop falls behind, the signing threads run out of batches, and a core goes idle.
With a core for each (one signing thread on two cores) the signing thread is
the busier side and keeps its priority (``benchmarks/bench_receiver.py``
measures both).

Unlike :class:`~.parallel.ParallelPipeline` (worker processes) nothing is
copied between processes and no frame is parsed twice. A pool of Python threads
would not do: a thread needs the GIL to hand its results back, and gets it only
when the loop's thread blocks or the interpreter's switch interval runs out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import SinkError
from ..futures import forward
from .guest import Prepared, finish_guests, prepare_guests
from .offload import OffloadPipeline
from .queue import SinkQueue
from .stamp import _ENV_TAIL, _PAE_HEAD, Stamper
from .stats import PipelineStats

if TYPE_CHECKING:
    from .._native.edsign import SignPool
    from .router import GuestBatch

__all__ = ["SIGN_NICE", "ThreadedPipeline"]

log = logging.getLogger("hoststamp.pipeline")

#: how many nice steps the signing threads run below the agent's own priority
SIGN_NICE = 5


def _settle(dst: asyncio.Future[Any], src: asyncio.Future[Any]) -> None:
    forward(src, dst)


class _Batch:
    """One ``submit_guests`` call between the loop and a signing thread."""

    __slots__ = ("_progress", "_watch", "future", "prepared", "queues", "signing", "size")

    def __init__(self, prepared: Prepared, signing: asyncio.Future[list[bytes]] | None,
                 queues: list[SinkQueue]) -> None:
        self.prepared = prepared
        #: the queues when it was submitted (a reload's new queues get only what comes after it)
        self.queues = queues
        #: the signatures being made in a thread (None: nothing in the batch to sign)
        self.signing = signing
        self.size = len(prepared.out)
        #: the answer (see :class:`~.router.GuestBatch`): settles once the sinks took the batch
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._watch: Callable[[int, Any], None] | None = None
        self._progress: Callable[[int], None] | None = None

    def watch(self, on_refusal: Callable[[int, Any], None]) -> None:
        """As :meth:`.router.GuestBatch.watch`: told once the batch is signed and in the queues."""
        self._watch = on_refusal

    def progress(self, on_progress: Callable[[int], None]) -> None:
        """As :meth:`.router.GuestBatch.progress`: told once the batch is signed and in the queues."""
        self._progress = on_progress

    def follow(self, answer: GuestBatch) -> None:
        """Hand what watches this batch on to the queues' answer, before the events go in."""
        if self._watch is not None:
            answer.watch(self._watch)
        if self._progress is not None:
            answer.progress(self._progress)

    async def wait(self) -> bool:
        """True when every event was taken (the answer of a single event)."""
        res = await asyncio.shield(self.future)
        return res is None or all(r is True for r in res)


class ThreadedPipeline(OffloadPipeline[_Batch]):
    """A Pipeline that signs guest batches in ``threads`` native threads. Call :meth:`aclose` at the end."""

    def __init__(self, stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats | None = None, *,
                 threads: int = 1, max_pending: int = 8192, nice: int | None = None) -> None:
        super().__init__(stamper, queues, stats, max_pending=max_pending)
        if threads < 1:
            raise ValueError("a ThreadedPipeline needs at least one thread")
        if stamper._native is None:
            raise ValueError("a ThreadedPipeline needs the native signer")
        self.threads = threads
        #: how far below the agent the signing threads run (None: :data:`SIGN_NICE` when they and the loop are
        #: more than the cores, else 0)
        self.nice = nice if nice is not None else (SIGN_NICE if threads + 1 > len(os.sched_getaffinity(0)) else 0)
        self._signer = stamper._native
        #: the native threads, from :meth:`start` (or the first batch) to :meth:`aclose`
        self._pool: SignPool | None = None
        #: batches being signed, by job id
        self._signing: dict[int, asyncio.Future[list[bytes]]] = {}

    async def start(self) -> int:
        """Start the signing threads now rather than with the first batch; returns how many run."""
        self._open()
        return self.threads

    def _open(self) -> None:
        if self._pool is not None or self._closed:
            return
        from .._native.edsign import SignPool

        st = self.stamper
        self._pool = SignPool(self._signer, _PAE_HEAD, st._env_head, st._env_mid, _ENV_TAIL, self.threads,
                              self.nice)
        asyncio.get_running_loop().add_reader(self._pool.fileno(), self._collect)

    def _collect(self) -> None:
        """The eventfd is readable: hand finished batches to their futures."""
        assert self._pool is not None
        try:
            done = self._pool.collect()
        except MemoryError as exc:  # which batches were lost is not known: fail every one being signed
            log.error("cannot take the signed batches (%s): %d batches fail and will be sent again", exc,
                      len(self._signing))
            for waiting in self._signing.values():
                if not waiting.done():
                    waiting.set_exception(MemoryError("no memory for the signed batch"))
            self._signing.clear()
            return
        for job, mats in done:
            fut = self._signing.pop(job, None)
            if fut is None or fut.done():
                continue
            if mats is None:
                fut.set_exception(MemoryError("no memory to sign the batch"))
            else:
                fut.set_result(mats)

    def _sign(self, digests: list[bytes]) -> asyncio.Future[list[bytes]]:
        assert self._pool is not None
        fut: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self._signing[self._pool.submit(digests)] = fut
        return fut

    async def submit_guests(self, events: Sequence[Mapping[str, Any]], hostpeer: str,
                            frames: Sequence[bytes] | None = None,
                            on_answer: Callable[[Any], None] | None = None) -> _Batch:
        """Stamp the batch up to its signatures, have a thread sign it; the answer settles once the sinks took
        it. The event dicts become the pipeline's (they are changed in place). ``on_answer``: as
        :meth:`.router.Pipeline.submit_guests`."""
        await self._wait_for_room()
        self._open()
        prepared = prepare_guests(self.stamper, events, hostpeer, owned=True)
        try:
            signing = self._sign(prepared.digests) if prepared.digests else None
        except (MemoryError, ValueError) as exc:  # no memory for the job; the pool closed under us
            raise SinkError(f"cannot sign the batch: {exc}") from exc
        batch = _Batch(prepared, signing, self.queues)
        if on_answer is not None:
            on_answer(batch)
        self._push(batch)
        return batch

    async def submit_guest(self, event: Mapping[str, Any], hostpeer: str) -> _Batch:  # type: ignore[override]
        """One event, in order with the batches; ``await (await submit_guest(...)).wait()`` is True once every
        sink took it."""
        return await self.submit_guests([dict(event)], hostpeer)

    async def _put(self, batch: _Batch) -> None:
        try:
            mats = [] if batch.signing is None else await batch.signing
            results = finish_guests(batch.prepared, mats)
        except Exception as exc:  # the signer itself failed (out of memory): the sender sends it again
            log.error("signing a batch of %d guest events failed: %s", batch.size, exc)
            self._fail(batch, SinkError(f"signing failed: {exc}"))
            return
        answer = await self._enqueue_guests(results, batch.queues, on_answer=batch.follow)
        answer.future.add_done_callback(functools.partial(_settle, batch.future))

    def _fail(self, batch: _Batch, exc: SinkError) -> None:
        if not batch.future.done():
            batch.future.set_exception(exc)

    async def aclose(self, timeout: float | None = None) -> None:
        """Put what is being signed into the queues (for up to ``timeout``), then stop the threads."""
        await self._close_order(timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            asyncio.get_running_loop().remove_reader(pool.fileno())
            pool.close()  # waits for a batch being signed: a few milliseconds
        for fut in self._signing.values():
            fut.cancel()
        self._signing.clear()
