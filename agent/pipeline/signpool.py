"""The signing worker processes of a :class:`~.parallel.ParallelPipeline`: start, feed, replace, stop.

Each worker is ``python -m agent.pipeline.signer FD`` on one end of a
``socketpair``; the first message gives it the host identity and key, and it
answers ``K`` when ready. A job goes to the worker with the least work
outstanding; answers come back in the order jobs were sent, and each is checked
against its job (as many results as frames) before it is taken.

A worker that ends or answers something malformed is replaced, and the jobs it
held are sent to the others: the one it was working on counts an attempt (it
may be what killed it), the ones queued behind it do not. A job that has used
its attempts fails with :class:`~agent.errors.SinkError`. Once the pool is
closing, no replacement is started and one that was starting is stopped.
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
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from ..errors import SinkError
from .signer import decode_reply

if TYPE_CHECKING:
    from .parallel import Submission
    from .queue import SinkQueue
    from .stamp import Stamper

__all__ = ["ATTEMPTS", "Job", "SignerPool", "Worker"]

log = logging.getLogger("hoststamp.pipeline")

_LEN = struct.Struct(">I")
#: tries a job gets (a worker dying under it counts one)
ATTEMPTS = 2
#: where ``agent`` can be imported from, for the worker processes
_ROOT = str(Path(__file__).resolve().parents[2])


class Job:
    __slots__ = ("attempts", "frames", "future", "meta", "payload", "queues", "size", "submission")

    def __init__(self, payload: bytes, meta: list[tuple[str, str, str, int] | Exception],
                 queues: list[SinkQueue], submission: Submission) -> None:
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


class Worker:
    __slots__ = ("load", "outstanding", "proc", "reader", "task", "writer")

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proc = proc
        self.reader = reader
        self.writer = writer
        #: jobs sent and not answered, in the order sent (answers come in that order)
        self.outstanding: deque[Job] = deque()
        self.load = 0
        self.task: asyncio.Task[None] | None = None

    def send(self, job: Job) -> None:
        job.attempts += 1
        self.outstanding.append(job)
        self.load += job.size
        self.writer.write(job.payload)


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    return await reader.readexactly(_LEN.unpack(head)[0])


class SignerPool:
    """``size`` signing worker processes for ``stamper``'s key and host id."""

    def __init__(self, stamper: Stamper, size: int) -> None:
        if size < 1:
            raise ValueError("workers must be at least 1")
        self.size = size
        body = b"I" + orjson.dumps({"host_id": stamper.host_id, "pem": stamper.key.private_pem().decode()})
        self._hello = _LEN.pack(len(body)) + body
        #: the workers running now
        self.workers: list[Worker] = []
        self._starting: asyncio.Lock | None = None
        self._closed = False
        #: workers started over the pool's life (replacements included)
        self.started = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, job: Job) -> None:
        """To the worker with the least work outstanding; SinkError when none runs."""
        if not self.workers:
            raise SinkError("no signing worker is running")
        min(self.workers, key=lambda w: w.load).send(job)

    async def _spawn(self) -> Worker:
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
        worker = Worker(proc, reader, writer)
        try:
            writer.write(self._hello)
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
            while len(self.workers) < self.size:
                self.workers.append(await self._spawn())
        return len(self.workers)

    async def _replies(self, worker: Worker) -> None:
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

    async def _replace(self, dead: Worker) -> None:
        if dead in self.workers:
            self.workers.remove(dead)
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
                self.workers.append(fresh)
        for job in orphans:
            if job.future.done():  # answered meanwhile (the pipeline closed and failed it)
                continue
            if job.attempts >= ATTEMPTS or not self.workers:
                job.future.set_exception(SinkError(f"signing failed: {job.attempts} worker(s) ended under it"))
            else:
                min(self.workers, key=lambda w: w.load).send(job)

    async def _stop_worker(self, worker: Worker) -> None:
        worker.writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await worker.writer.wait_closed()
        try:
            async with asyncio.timeout(5):
                await worker.proc.wait()
        except TimeoutError:
            worker.proc.kill()
            await worker.proc.wait()

    async def aclose(self) -> None:
        """Stop every worker (their sockets close; each ends at end of file)."""
        self._closed = True
        workers, self.workers = self.workers, []
        for w in workers:
            if w.task is not None:
                w.task.cancel()
        await asyncio.gather(*(self._stop_worker(w) for w in workers), return_exceptions=True)
