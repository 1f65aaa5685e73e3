"""Guest events stamped and signed in worker processes, so a receiver can use every core.

:class:`ParallelPipeline` is a :class:`~.router.Pipeline` whose guest path keeps
only the ordered, cheap part in the event loop: the per-source sequence number
and the receive time of each batch. The frames as they were received go, with
those numbers, to ``workers`` signing processes (:mod:`.signer`) over a
``socketpair`` each, a batch at a time; a worker parses, stamps, signs and
serializes, and sends the event bodies back. Nothing is pickled: a job is the
frames and two packed arrays, a reply is the bodies and one. Results go into
the sink queues in submission order, so each source's events still reach every
sink with increasing sequence numbers, and each event is byte for byte what
the single-process path would make. Probe readings stay in the loop (they are
few).

The processes themselves are a :class:`~.signpool.SignerPool`. A worker that
dies (the OOM killer) is replaced and its unanswered jobs are sent again (same
numbers, same time: the same events). A job that kills two workers fails its
batch, which the receiver answers by closing the connection without
acknowledging it, so the sender sends it again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from ..errors import SinkError, VerifyError
from ..model import Event
from ..signing.event import normalize_time
from .offload import OffloadPipeline
from .queue import BatchReceipt, SinkQueue
from .router import GuestBatch, Pipeline
from .signer import encode_job
from .signpool import Job, SignerPool
from .stamp import Stamper
from .stats import PipelineStats

__all__ = ["ParallelPipeline", "Submission", "build_pipeline"]

log = logging.getLogger("hoststamp.pipeline")

class Submission:
    """One ``submit_guests`` call: its answer, once each of its jobs is in the queues and taken."""

    __slots__ = ("_progress", "_settled", "_told", "_watch", "future", "jobs_left", "parts")

    def __init__(self, jobs: int) -> None:
        #: None when every event was taken, else each event's answer (True, False, or the refusing exception)
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.jobs_left = jobs
        #: per job, in order: (its results, its receipt)
        self.parts: list[tuple[list[Event | Exception], BatchReceipt]] = []
        self._watch: Callable[[int, Any], None] | None = None
        #: told how many of the first events are settled (see :meth:`progress`); per job, its settled count
        self._progress: Callable[[int], None] | None = None
        self._settled: dict[int, int] = {}
        self._told = 0

    def progress(self, on_progress: Callable[[int], None]) -> None:
        """As :meth:`.router.GuestBatch.progress`, over the jobs in order: told once each job's own first events
        are settled, as far as every earlier job is settled whole."""
        self._progress = on_progress
        for i, (results, receipt) in enumerate(self.parts):
            self._follow(i, results, receipt)

    def _follow(self, i: int, results: list[Event | Exception], receipt: BatchReceipt) -> None:
        GuestBatch(receipt, results).progress(functools.partial(self._job_progressed, i))
        receipt.future.add_done_callback(
            lambda f: None if f.cancelled() or f.exception() is not None else self._job_progressed(i, len(results)))

    def _job_progressed(self, i: int, settled: int) -> None:
        if self._progress is None or self.future.done():
            return
        self._settled[i] = max(settled, self._settled.get(i, 0))
        total = 0
        for j, (results, _receipt) in enumerate(self.parts):
            got = self._settled.get(j, 0)
            total += got
            if got < len(results):
                break
        if total > self._told:
            self._told = total
            self._progress(total)

    def watch(self, on_refusal: Callable[[int, Any], None]) -> None:
        """As :meth:`.router.GuestBatch.watch`: told of each job once it is signed and in the queues."""
        self._watch = on_refusal
        offset = 0
        for results, receipt in self.parts:
            GuestBatch(receipt, results).watch(on_refusal, offset)
            offset += len(results)

    def _part(self, results: list[Event | Exception], receipt: BatchReceipt) -> None:
        """One job's results, in the queues now."""
        if self._watch is not None:
            GuestBatch(receipt, results).watch(self._watch, sum(len(r) for r, _ in self.parts))
        self.parts.append((results, receipt))
        if self._progress is not None:
            self._follow(len(self.parts) - 1, results, receipt)

    async def wait(self) -> bool:
        """True when every event was taken (the answer of a single event)."""
        res = await asyncio.shield(self.future)
        return res is None or all(r is True for r in res)


def _dumps(event: Mapping[str, Any]) -> bytes:
    """An event as JSON for a worker; by the standard library when it holds an integer beyond 64 bits."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError:
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class ParallelPipeline(OffloadPipeline[Job]):
    """A Pipeline that signs guest events in ``workers`` processes. Call :meth:`aclose` at the end."""

    def __init__(self, stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats | None = None, *,
                 workers: int = 2, batch_max: int = 256, max_pending: int = 8192) -> None:
        super().__init__(stamper, queues, stats, max_pending=max_pending)
        #: the worker processes
        self.signers = SignerPool(stamper, workers)
        self.batch_max = batch_max
        self._seq = stamper._seq.next
        self._now = stamper._now

    async def start(self) -> int:
        """Start the worker processes now rather than on the first event; returns how many run."""
        return await self.signers.start()

    @property
    def started(self) -> int:
        """Worker processes started over the pipeline's life (replacements included)."""
        return self.signers.started

    # --- submitting -------------------------------------------------------------------------------------------

    async def submit_guests(self, events: Sequence[Mapping[str, Any]], hostpeer: str,
                            frames: Sequence[bytes] | None = None,
                            on_answer: Callable[[Any], None] | None = None) -> Submission:
        """Number the events, send them to the workers; the answer completes once the sinks took them
        (``on_answer``: as :meth:`.router.Pipeline.submit_guests`)."""
        await self._wait_for_room()
        if not self.signers.workers:
            await self.signers.start()
        if self._closed:
            raise SinkError("the signing pipeline is closed")
        if not self.signers.workers:
            raise SinkError("no signing worker is running")
        queues = self.queues
        received = self._now()
        n = len(events)
        step = self.batch_max
        sub = Submission((n + step - 1) // step or 1)
        if on_answer is not None:
            on_answer(sub)
        if n == 0:
            sub.jobs_left = 0
            sub.future.set_result(None)
            return sub
        next_seq = self._seq
        jobs: list[Job] = []
        for lo in range(0, n, step):
            meta: list[tuple[str, str, str, int] | Exception] = []
            seqs: list[int] = []
            raw: list[bytes] = []
            for i in range(lo, min(lo + step, n)):
                ev = events[i]
                if frames is not None:
                    frame = frames[i]
                else:
                    try:
                        frame = _dumps(ev)
                    except (TypeError, ValueError) as exc:  # not JSON at all: nothing a guest could have sent
                        meta.append(exc)
                        continue
                when = ev.get("time")
                if type(when) is str:
                    try:
                        normalize_time(when)  # a date that does not exist is refused here, before it is numbered
                    except VerifyError as exc:
                        meta.append(exc)
                        continue
                source = ev.get("source")
                source = source if type(source) is str else str(source or "")
                seq = next_seq(source)
                ev_id, ev_type = ev.get("id"), ev.get("type")
                meta.append((ev_id if type(ev_id) is str else str(ev_id or ""), source,
                             ev_type if type(ev_type) is str else str(ev_type or ""), seq))
                seqs.append(seq)
                raw.append(frame)
            jobs.append(Job(encode_job(received, hostpeer, seqs, raw) if raw else b"", meta, queues, sub))
        # every job is made before any is sent: a failure above leaves nothing half submitted
        for job in jobs:
            if job.frames:
                self.signers.send(job)
            else:
                job.future.set_result([])
            self._push(job)
        return sub

    async def submit_guest(self, event: Mapping[str, Any], hostpeer: str) -> Submission:  # type: ignore[override]
        """One event; ``await (await submit_guest(...)).wait()`` is True once every sink took it."""
        return await self.submit_guests([event], hostpeer)

    # --- results into the queues, in submission order ---------------------------------------------------------

    async def _put(self, job: Job) -> None:
        sub = job.submission
        try:
            replies: list[bytes | str] = await job.future
        except SinkError as exc:
            if not sub.future.done():
                sub.future.set_exception(exc)
            return
        results = self._results(job, replies)
        signed = [r for r in results if isinstance(r, Event)]
        self.stats.signed += len(signed)
        self.stats.rejected += len(results) - len(signed)
        receipt = BatchReceipt(signed, len(job.queues))
        sub._part(results, receipt)  # before the puts, which a full queue may hold back: watched from the start
        for q in job.queues:
            await q.put_many(signed, receipt)
        sub.jobs_left -= 1
        if sub.jobs_left == 0 and not sub.future.done():
            self._answer(sub)

    def _fail(self, job: Job, exc: SinkError) -> None:
        if not job.future.done():
            job.future.set_exception(exc)
        if not job.submission.future.done():
            job.submission.future.set_exception(exc)

    @staticmethod
    def _results(job: Job, replies: list[bytes | str]) -> list[Event | Exception]:
        out: list[Event | Exception] = []
        it = iter(replies)
        for m in job.meta:
            if isinstance(m, Exception):
                out.append(m)
                continue
            r = next(it)
            out.append(Event(m[0], m[1], m[2], m[3], r) if isinstance(r, bytes) else ValueError(r))
        return out

    @staticmethod
    def _answer(sub: Submission) -> None:
        futs = [receipt.future for _r, receipt in sub.parts]

        def done(_f: asyncio.Future[Any]) -> None:
            if sub.future.done():
                return
            answer: list[Any] = []
            clean = True
            for results, receipt in sub.parts:
                f = receipt.future
                if f.cancelled() or f.exception() is not None:
                    sub.future.set_exception(SinkError("a sink queue failed"))
                    return
                taken = iter(f.result() or ())
                for r in results:
                    if isinstance(r, Exception):
                        answer.append(r)
                        clean = False
                    else:
                        ok = next(taken, True)
                        clean = clean and ok is True
                        answer.append(ok)
            sub.future.set_result(None if clean else answer)

        asyncio.gather(*futs, return_exceptions=True).add_done_callback(done)

    # --- the end ----------------------------------------------------------------------------------------------

    async def aclose(self, timeout: float | None = None) -> None:
        """Put what is signed into the queues (for up to ``timeout``), then stop the workers."""
        await self._close_order(timeout)
        await self.signers.aclose()


def build_pipeline(stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats, sign_workers: int = 0,
                   sign_threads: int = 0) -> Pipeline:
    """``[agent] sign_workers`` / ``sign_threads``: both 0 is the plain :class:`Pipeline`; workers a
    :class:`ParallelPipeline`; threads a :class:`~.threaded.ThreadedPipeline` when the native signer was built
    (else the plain pipeline, with a warning: a thread signing through the cryptography package would wait for
    the GIL at every signature)."""
    if sign_workers < 0 or sign_threads < 0:
        raise ValueError("sign_workers and sign_threads must not be negative")
    if sign_workers and sign_threads:
        raise ValueError("set sign_workers or sign_threads, not both")
    if sign_workers:
        return ParallelPipeline(stamper, queues, stats, workers=sign_workers)
    if sign_threads:
        if stamper._native is not None:
            from .threaded import ThreadedPipeline

            return ThreadedPipeline(stamper, queues, stats, threads=sign_threads)
        log.warning("sign_threads = %d needs the native signer, which is not built here (see README.md, "
                    "Building): guest events are signed in the event loop", sign_threads)
    return Pipeline(stamper, queues, stats)
