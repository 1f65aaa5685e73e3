"""Guest events stamped and signed in worker processes, so a receiver can use every core.

:class:`ParallelPipeline` is a :class:`~.router.Pipeline` whose ``submit_guest``
does the cheap, ordered part in the event loop (the per-source sequence number
and the receive time) and hands the expensive part (JCS, digests, the Ed25519
signature, the event JSON) to a pool of ``workers`` processes, in batches of
what arrived during one loop turn. Results are put into the sink queues in
submission order, so each source's events still reach every sink with
increasing sequence numbers. Probe readings stay in the loop (they are few).

Each worker process holds its own copy of the host key (sent once, at start)
and a :class:`~.stamp.Stamper` whose sequence and clock are the values the loop
chose, so an event is byte for byte what the single-process path would make.
An event a worker cannot stamp completes its receipt as dropped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import AgentError
from ..model import Event
from ..signing.keys import SigningKey
from .queue import Receipt, SinkQueue
from .router import Pipeline
from .sequence import SequenceStore
from .stamp import Stamper
from .stats import PipelineStats

__all__ = ["ParallelPipeline", "build_pipeline"]

log = logging.getLogger("hoststamp.pipeline")

#: (event, hostpeer, sequence, receive time)
_Job = tuple[dict[str, Any], str, int, float]
#: (id, source, type, sequence, body), or an error text
_Done = tuple[str, str, str, int, bytes] | str


class _Preset(SequenceStore):
    """The sequence number the loop already chose."""

    def __init__(self) -> None:
        super().__init__(None)
        self.value = 0

    def next(self, source: str) -> int:
        return self.value


class _Signer:
    """Stamps jobs with the sequence and time the loop chose."""

    def __init__(self, key: SigningKey, host_id: str) -> None:
        self._preset = _Preset()
        self._ts = 0.0
        self._stamper = Stamper(key, host_id, self._preset, clock=lambda: self._ts)

    def stamp_batch(self, jobs: list[_Job]) -> list[_Done]:
        out: list[_Done] = []
        stamp, preset = self._stamper.stamp_guest, self._preset
        for event, hostpeer, seq, ts in jobs:
            preset.value, self._ts = seq, ts
            try:
                e = stamp(event, hostpeer)
            except (ValueError, TypeError, AgentError) as exc:  # e.g. a time of a date that does not exist
                out.append(f"cannot stamp: {exc}")
                continue
            out.append((e.id, e.source, e.type, e.sequence, e.body))
        return out


_signer: _Signer | None = None


def _init(private_pem: bytes, host_id: str) -> None:
    global _signer
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_pem, None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    _signer = _Signer(SigningKey(key), host_id)


def _ready() -> int:
    time.sleep(0.05)  # long enough that every worker gets one of these
    return os.getpid()


def _stamp_batch(jobs: list[_Job]) -> list[_Done]:
    assert _signer is not None
    return _signer.stamp_batch(jobs)


class ParallelPipeline(Pipeline):
    """A Pipeline that signs guest events in ``workers`` processes. Call :meth:`aclose` at the end."""

    def __init__(self, stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats | None = None, *,
                 workers: int = 2, batch_max: int = 256, max_pending: int = 8192) -> None:
        super().__init__(stamper, queues, stats)
        self.workers = workers
        self.batch_max = batch_max
        self.max_pending = max_pending
        self._initargs = (stamper.key.private_pem(), stamper.host_id)
        self._pool = self._new_pool()
        self._seqs: SequenceStore = stamper._seq
        self._now = stamper._now
        self._jobs: list[_Job] = []
        self._receipts: list[Receipt] = []
        self._scheduled = False
        # (results, the jobs, their receipts, the queues the events were submitted for)
        self._inflight: deque[tuple[asyncio.Future[list[_Done]], list[_Job], list[Receipt], list[SinkQueue]]] = deque()
        self._pending = 0
        self._submitted = self._settled = 0
        self._room = asyncio.Event()
        self._room.set()
        self._ready = asyncio.Event()
        self._enqueuer: asyncio.Task[None] | None = None
        self._jobs_queues = self.queues

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_init,
                                   initargs=self._initargs)

    def _sign(self, jobs: list[_Job]) -> asyncio.Future[list[_Done]]:
        """Hand a batch to the pool; a pool broken by a dead worker (the OOM killer) is replaced first."""
        loop = asyncio.get_running_loop()
        try:
            return loop.run_in_executor(self._pool, _stamp_batch, jobs)
        except BrokenProcessPool:
            log.error("a signing worker died; starting new ones")
            broken, self._pool = self._pool, self._new_pool()
            broken.shutdown(wait=False)
            return loop.run_in_executor(self._pool, _stamp_batch, jobs)

    async def start(self) -> int:
        """Start the worker processes now rather than on the first event; returns how many answered."""
        loop = asyncio.get_running_loop()
        n = self.workers
        pids = await asyncio.gather(*(loop.run_in_executor(self._pool, _ready) for _ in range(2 * n)))
        return len(set(pids))

    async def submit_guest(self, event: Mapping[str, Any], hostpeer: str) -> Receipt:
        if self._jobs and self.queues is not self._jobs_queues:
            self._dispatch()  # the queues were swapped (a reload): what came before goes to the old ones
        self._jobs_queues = self.queues
        while self._pending >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        source = str(event.get("source", ""))
        self._jobs.append((dict(event), hostpeer, self._seqs.next(source), self._now()))
        receipt = Receipt(len(self.queues))
        self._receipts.append(receipt)
        self._pending += 1
        self._submitted += 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)
        if self._enqueuer is None:
            self._enqueuer = asyncio.get_running_loop().create_task(self._enqueue(), name="parallel enqueue")
        return receipt

    async def submit_guests(self, events: Sequence[Mapping[str, Any]], hostpeer: str,
                            frames: Sequence[bytes] | None = None) -> Any:
        receipts = [await self.submit_guest(e, hostpeer) for e in events]
        return _Gathered(receipts)

    def _dispatch(self) -> None:
        self._scheduled = False
        jobs, receipts, queues = self._jobs, self._receipts, self._jobs_queues
        self._jobs, self._receipts = [], []
        for i in range(0, len(jobs), self.batch_max):
            batch = jobs[i : i + self.batch_max]
            self._inflight.append((self._sign(batch), batch, receipts[i : i + self.batch_max], queues))
        self._ready.set()

    async def _enqueue(self) -> None:
        """Results in submission order into every queue."""
        while True:
            if not self._inflight:
                self._ready.clear()
                await self._ready.wait()
                continue
            fut, jobs, receipts, queues = self._inflight[0]
            try:
                try:
                    done = await fut
                except BrokenProcessPool:  # its worker died: once more, on a new pool if need be
                    done = await self._sign(jobs)
            except Exception as exc:  # failed twice: these events are lost to the sinks, say so
                log.error("signing worker failed: %s", exc)
                done = [f"signing worker failed: {exc}"] * len(receipts)
            self._inflight.popleft()
            for item, receipt in zip(done, receipts, strict=True):
                if isinstance(item, str):
                    self.stats.rejected += 1
                    for _q in queues:
                        receipt.drop()
                    continue
                self.stats.signed += 1
                ev = Event(*item)
                for q in queues:
                    await q.put(ev, receipt)
            self._pending -= len(receipts)
            self._settled += len(receipts)
            self._room.set()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout``) until every guest event submitted so far is in its queues; call before
        closing them. True when it got there."""
        target = self._submitted
        try:
            async with asyncio.timeout(timeout):
                while self._settled < target:
                    await asyncio.sleep(0.005)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float | None = None) -> None:
        """Put what is signed into the queues (for up to ``timeout``), then stop the workers."""
        if self._enqueuer is not None:
            if not await self.drain(timeout):
                log.warning("%d guest events still being signed at shutdown; their senders will send them again",
                            self._pending)
            self._enqueuer.cancel()
            await asyncio.gather(self._enqueuer, return_exceptions=True)
            self._enqueuer = None
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)


class _Gathered:
    def __init__(self, receipts: list[Receipt]) -> None:
        futs = [r.future for r in receipts]
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        gathered = asyncio.gather(*futs, return_exceptions=True)
        gathered.add_done_callback(self._done)

    def _done(self, g: asyncio.Future[list[Any]]) -> None:
        if self.future.done():
            return
        res = g.result()
        self.future.set_result(None if all(r is True for r in res) else res)


def build_pipeline(stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats, sign_workers: int = 0
                   ) -> Pipeline:
    """``[agent] sign_workers``: 0 is the plain :class:`Pipeline`, more a :class:`ParallelPipeline`."""
    if sign_workers < 0:
        raise ValueError("sign_workers must not be negative")
    if sign_workers == 0:
        return Pipeline(stamper, queues, stats)
    return ParallelPipeline(stamper, queues, stats, workers=sign_workers)
