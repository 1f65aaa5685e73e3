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

A worker that dies (the OOM killer) is replaced and its unanswered jobs are
sent to the new one (same numbers, same time: the same events). A job that
kills two workers fails its batch, which the receiver answers by closing the
connection without acknowledging it, so the sender sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..errors import SinkError
from ..model import Event
from .queue import BatchReceipt, SinkQueue
from .router import Pipeline
from .signer import decode_reply, encode_job
from .stamp import Stamper
from .stats import PipelineStats

__all__ = ["ParallelPipeline", "build_pipeline"]

log = logging.getLogger("hoststamp.pipeline")

_LEN = struct.Struct(">I")
#: tries a job gets (a worker dying under it counts one)
_ATTEMPTS = 2
#: where ``agent`` can be imported from, for the worker processes
_ROOT = str(Path(__file__).resolve().parents[2])


class _Submission:
    """One ``submit_guests`` call: its answer, once each of its jobs is in the queues and taken."""

    __slots__ = ("future", "jobs_left", "parts")

    def __init__(self, jobs: int) -> None:
        #: None when every event was taken, else each event's answer (True, False, or the refusing exception)
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.jobs_left = jobs
        #: per job, in order: (its results, its receipt)
        self.parts: list[tuple[list[Event | Exception], BatchReceipt]] = []

    async def wait(self) -> bool:
        """True when every event was taken (the answer of a single event)."""
        res = await asyncio.shield(self.future)
        return res is None or all(r is True for r in res)


class _Job:
    __slots__ = ("attempts", "frames", "future", "meta", "payload", "queues", "size", "submission")

    def __init__(self, payload: bytes, meta: list[tuple[str, str, str, int] | Exception],
                 queues: list[SinkQueue], submission: _Submission) -> None:
        self.payload = payload
        #: per event: (id, source, type, sequence), or why it was refused before it was sent
        self.meta = meta
        self.size = len(meta)
        #: how many of them were sent (the others were refused before)
        self.frames = sum(1 for m in meta if not isinstance(m, Exception))
        self.queues = queues
        self.submission = submission
        self.future: asyncio.Future[list[bytes | str]] = asyncio.get_running_loop().create_future()
        self.attempts = 0


class _Worker:
    __slots__ = ("load", "outstanding", "proc", "reader", "task", "writer")

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proc = proc
        self.reader = reader
        self.writer = writer
        #: jobs sent and not answered, in the order sent (answers come in that order)
        self.outstanding: deque[_Job] = deque()
        self.load = 0
        self.task: asyncio.Task[None] | None = None

    def send(self, job: _Job) -> None:
        job.attempts += 1
        self.outstanding.append(job)
        self.load += job.size
        self.writer.write(job.payload)


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    return await reader.readexactly(_LEN.unpack(head)[0])


class ParallelPipeline(Pipeline):
    """A Pipeline that signs guest events in ``workers`` processes. Call :meth:`aclose` at the end."""

    def __init__(self, stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats | None = None, *,
                 workers: int = 2, batch_max: int = 256, max_pending: int = 8192) -> None:
        super().__init__(stamper, queues, stats)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.batch_max = batch_max
        self.max_pending = max_pending
        self._init = self._init_message(stamper)
        self._seq = stamper._seq.next
        self._now = stamper._now
        self._pool: list[_Worker] = []
        self._starting: asyncio.Lock | None = None
        #: jobs in submission order, until their events are in the queues
        self._order: deque[_Job] = deque()
        self._pending = 0
        self._room = asyncio.Event()
        self._room.set()
        self._more = asyncio.Event()
        self._enqueuer: asyncio.Task[None] | None = None
        self._closed = False
        #: jobs submitted and jobs whose events are in the queues (or failed), for :meth:`drain`
        self._submitted = 0
        self._done_jobs = 0
        self._progress = asyncio.Event()
        #: the job whose events are being put into the queues
        self._putting: _Job | None = None
        #: workers started over the pipeline's life (replacements included)
        self.started = 0

    @staticmethod
    def _init_message(stamper: Stamper) -> bytes:
        body = b"I" + orjson.dumps({"host_id": stamper.host_id, "pem": stamper.key.private_pem().decode()})
        return _LEN.pack(len(body)) + body

    # --- workers ----------------------------------------------------------------------------------------------

    async def _spawn(self) -> _Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent.pipeline.signer", str(child.fileno()),
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL, env=env)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        worker = _Worker(proc, reader, writer)
        try:
            writer.write(self._init)
            async with asyncio.timeout(60):
                ready = await _read_message(reader)
            if ready != b"K":
                raise SinkError(f"signing worker answered {ready[:20]!r} to its start")
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await self._stop_worker(worker)
            raise SinkError(f"signing worker did not start: {exc or type(exc).__name__}") from None
        except BaseException:
            await self._stop_worker(worker)
            raise
        self.started += 1
        worker.task = asyncio.get_running_loop().create_task(self._replies(worker), name="signing worker replies")
        return worker

    async def start(self) -> int:
        """Start the worker processes now rather than on the first event; returns how many run."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            while len(self._pool) < self.workers:
                self._pool.append(await self._spawn())
        return len(self._pool)

    async def _replies(self, worker: _Worker) -> None:
        try:
            while True:
                body = await _read_message(worker.reader)
                job = worker.outstanding[0]
                replies = decode_reply(body)
                if len(replies) != job.frames:
                    raise ValueError(f"{len(replies)} results for {job.frames} frames")
                worker.outstanding.popleft()
                worker.load -= job.size
                if not job.future.done():
                    job.future.set_result(replies)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, IndexError, ValueError, struct.error) as exc:
            if self._closed:
                return
            rc = worker.proc.returncode
            why = f"exit status {rc}" if rc is not None else f"{type(exc).__name__}: {exc}"
            log.error("a signing worker (pid %s) ended or failed (%s); starting a new one", worker.proc.pid, why)
        await self._replace(worker)

    async def _replace(self, dead: _Worker) -> None:
        if dead in self._pool:
            self._pool.remove(dead)
        orphans = list(dead.outstanding)
        dead.outstanding.clear()
        # only the job the worker was on can have ended it: the ones queued behind it go again, uncounted
        for job in orphans[1:]:
            job.attempts -= 1
        await self._stop_worker(dead)
        fresh = None
        if not self._closed:
            try:
                fresh = await self._spawn()
            except (SinkError, OSError) as exc:
                log.error("%s", exc)
        if fresh is not None:
            if self._closed:  # closed while it started
                await self._stop_worker(fresh)
            else:
                self._pool.append(fresh)
        for job in orphans:
            if job.attempts >= _ATTEMPTS or not self._pool:
                job.future.set_exception(SinkError(f"signing failed: {job.attempts} worker(s) ended under it"))
            else:
                min(self._pool, key=lambda w: w.load).send(job)

    async def _stop_worker(self, worker: _Worker) -> None:
        worker.writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await worker.writer.wait_closed()
        try:
            async with asyncio.timeout(5):
                await worker.proc.wait()
        except TimeoutError:
            worker.proc.kill()
            await worker.proc.wait()

    # --- submitting -------------------------------------------------------------------------------------------

    async def submit_guests(self, events: Sequence[Mapping[str, Any]], hostpeer: str,
                            frames: Sequence[bytes] | None = None) -> _Submission:
        """Number the events, send them to the workers; the answer completes once the sinks took them."""
        while self._pending >= self.max_pending and not self._closed:
            self._room.clear()
            await self._room.wait()
        if not self._pool and not self._closed:
            await self.start()
        if self._closed:
            raise SinkError("the signing pipeline is closed")
        if not self._pool:
            raise SinkError("no signing worker is running")
        queues = self.queues
        received = self._now()
        n = len(events)
        step = self.batch_max
        sub = _Submission((n + step - 1) // step or 1)
        if n == 0:
            sub.jobs_left = 0
            sub.future.set_result(None)
            return sub
        next_seq = self._seq
        jobs: list[_Job] = []
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
                        frame = orjson.dumps(ev)
                    except TypeError as exc:  # not JSON at all: nothing a guest could have sent
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
            jobs.append(_Job(encode_job(received, hostpeer, seqs, raw) if raw else b"", meta, queues, sub))
        # every job is made before any is sent: a failure above leaves nothing half submitted
        for job in jobs:
            if job.frames:
                min(self._pool, key=lambda w: w.load).send(job)
            else:
                job.future.set_result([])
            self._order.append(job)
            self._pending += job.size
            self._submitted += 1
        self._more.set()
        if self._enqueuer is None:
            self._enqueuer = asyncio.get_running_loop().create_task(self._enqueue(), name="parallel enqueue")
        return sub

    async def submit_guest(self, event: Mapping[str, Any], hostpeer: str) -> _Submission:  # type: ignore[override]
        """One event; ``await (await submit_guest(...)).wait()`` is True once every sink took it."""
        return await self.submit_guests([event], hostpeer)

    # --- results into the queues, in submission order ---------------------------------------------------------

    async def _enqueue(self) -> None:
        order = self._order
        while True:
            if not order:
                self._more.clear()
                await self._more.wait()
                continue
            job = order[0]
            sub = job.submission
            try:
                replies: list[bytes | str] | None = await job.future
            except SinkError as exc:
                replies = None
                if not sub.future.done():
                    sub.future.set_exception(exc)
            order.popleft()
            self._pending -= job.size
            self._room.set()
            self._done_jobs += 1
            self._progress.set()
            if replies is None:
                continue
            results = self._results(job, replies)
            signed = [r for r in results if isinstance(r, Event)]
            self.stats.signed += len(signed)
            self.stats.rejected += len(results) - len(signed)
            receipt = BatchReceipt(signed, len(job.queues))
            self._putting = job
            for q in job.queues:
                await q.put_many(signed, receipt)
            self._putting = None
            sub.parts.append((results, receipt))
            sub.jobs_left -= 1
            if sub.jobs_left == 0 and not sub.future.done():
                self._answer(sub)

    @staticmethod
    def _results(job: _Job, replies: list[bytes | str]) -> list[Event | Exception]:
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
    def _answer(sub: _Submission) -> None:
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
                        clean = clean and ok
                        answer.append(ok)
            sub.future.set_result(None if clean else answer)

        asyncio.gather(*futs, return_exceptions=True).add_done_callback(done)

    # --- the end ----------------------------------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout``) until every guest event submitted so far is in its queues (not for what is
        submitted meanwhile: a reload must not wait for the traffic to stop); call before closing them. True
        when it got there."""
        target = self._submitted
        try:
            async with asyncio.timeout(timeout):
                while self._done_jobs < target:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float | None = None) -> None:
        """Put what is signed into the queues (for up to ``timeout``), then stop the workers."""
        if not await self.drain(timeout):
            log.warning("%d guest events still being signed at shutdown; their senders will send them again",
                        self._pending)
        self._closed = True
        self._room.set()
        if self._enqueuer is not None:
            self._enqueuer.cancel()
            await asyncio.gather(self._enqueuer, return_exceptions=True)
            self._enqueuer = None
        if self._putting is not None and not self._putting.submission.future.done():
            self._putting.submission.future.set_exception(SinkError("the pipeline closed while this batch was queued"))
        pool, self._pool = self._pool, []
        for w in pool:
            if w.task is not None:
                w.task.cancel()
        await asyncio.gather(*(self._stop_worker(w) for w in pool), return_exceptions=True)
        for job in self._order:
            if not job.future.done():
                job.future.set_exception(SinkError("the pipeline closed before this batch was signed"))
            if not job.submission.future.done():
                job.submission.future.set_exception(SinkError("the pipeline closed before this batch was signed"))


def build_pipeline(stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats, sign_workers: int = 0
                   ) -> Pipeline:
    """``[agent] sign_workers``: 0 is the plain :class:`Pipeline`, more a :class:`ParallelPipeline`."""
    if sign_workers < 0:
        raise ValueError("sign_workers must not be negative")
    if sign_workers == 0:
        return Pipeline(stamper, queues, stats)
    return ParallelPipeline(stamper, queues, stats, workers=sign_workers)
