"""A sink queue kept on disk: events go into the sink's :class:`~.spool.Spool` first.

:class:`SpoolQueue` is a :class:`~.queue.SinkQueue` whose entries live in the
spool instead of memory, so a sink that is down for a long time costs disk,
not memory. Producers ``put`` as before; the events of one event-loop turn are
written with one ``write`` (group commit). The sink worker reads batches back
from the spool and, once the sink has taken and flushed them, calls
:meth:`SpoolQueue.commit`, which trims the spool. Anything not committed is
read again after a restart.

A receipt completes once its event is durable in the spool: after the fsync
that covers it (``always``, ``batch``), or once written to the kernel
(``never``). With ``always`` the producer itself also waits for that fsync.
The fsyncs run in a worker thread, one at a time, so the event loop never waits
for the disk. With ``batch`` a sync also happens at least every
``sync_interval`` seconds while there is unsynced data.

The overflow policy applies when the spool reaches ``spool_max_bytes``:
``block`` waits for the worker to free room, ``drop_newest`` refuses the event
(counted as ``spool_full``), ``drop_oldest`` deletes the oldest segment the sink holds nothing of unconfirmed
(its unsent records counted as ``evicted``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from ..config import SinkCommon
from ..errors import SinkError, Undeliverable
from ..model import Event
from . import wal
from .queue import Overflow, Receipt, SinkQueue
from .spool import Spool

__all__ = ["SpoolQueue", "queue_for"]

log = logging.getLogger("hoststamp.spool")

#: seconds between two log lines about events ``drop_oldest`` evicted (the count goes on in the metrics)
EVICTED_LOG_EVERY = 10.0

#: (write generation the waiter needs synced, receipt or future, the event a receipt waits for)
_Waiter = tuple[int, "Receipt | asyncio.Future[None]", Event | None]


class SpoolQueue(SinkQueue):
    """Same interface as :class:`SinkQueue`; the backlog lives in ``spool``."""

    def __init__(self, spool: Spool, overflow: Overflow = "block", *, maxsize: int = 10000,
                 sync_interval: float = 1.0) -> None:
        super().__init__(maxsize, overflow)
        self.spool = spool
        self.sync_interval = sync_interval
        self._wbuf: list[Event] = []
        self._wbuf_bytes = 0
        self._scheduled = False
        self._gen = 0  # write-outs done
        self._synced_gen = 0
        self._waiters: list[_Waiter] = []
        self._syncing = False
        self._timer: asyncio.TimerHandle | None = None
        self._write_error: str | None = None
        #: evicted events not logged yet, when the next line may be written, and the timer that will write it
        self._evicted_unlogged = 0
        self._evicted_log_at = 0.0
        self._evicted_timer: asyncio.TimerHandle | None = None
        #: index of the last record handed out by :meth:`get_batch`
        self.handed = spool.last_read
        self._released = False
        self._close_at: int | None = None

    def __len__(self) -> int:
        """Events waiting for the worker (not yet read back from the spool)."""
        return self.spool.unread + len(self._wbuf)

    @property
    def pending(self) -> int:
        """Events not yet delivered, read back or not: what stays in the spool if the agent stops now."""
        return self.spool.pending + len(self._wbuf)

    # --- producers ---------------------------------------------------------------------------------

    def _fits(self, size: int) -> bool:
        """Whether a record of ``size`` bytes may be added: within the cap, or (a record no spool of this size
        could hold is refused before) into a spool that holds nothing undelivered, whatever delivered records
        its newest segment still has (they go at its next rotation): else a producer blocked on them would
        wait for ever, since only new records make the spool rotate."""
        return self.spool.bytes + self._wbuf_bytes + size <= self.spool.max_bytes or self.pending == 0

    @property
    def largest(self) -> int:
        """The largest record any spool of this size can hold: ``spool_max_bytes`` less a segment's header."""
        return self.spool.max_bytes - len(wal.MAGIC)

    def _make_room(self, size: int) -> bool:
        """Apply a dropping policy until ``size`` fits; False when the event is refused."""
        while not self._fits(size):
            if self.overflow != "drop_oldest":
                return False
            self._write_out()
            spool = self.spool
            if spool.outstanding and (spool.bytes - spool.evictable_bytes() + len(wal.MAGIC) + self._wbuf_bytes
                                      + size > spool.max_bytes):
                return False  # evicting all it may would not make room: nothing is thrown away for nothing
            try:
                lost = self.spool.evict_oldest()
            except OSError as exc:  # no new segment to go on with: refuse this event, keep the old ones
                msg = f"spool {self.spool.dir}: cannot evict: {exc.strerror or exc}"
                if msg != self._write_error:
                    log.error("%s", msg)
                self._write_error = msg
                return False
            if lost is None:
                # nothing on disk may go: with records in flight to the sink the newcomer is what is dropped;
                # with only unwritten events left it is taken (the cap is exceeded briefly)
                return self.spool.outstanding == 0
            if lost:
                self.dropped["evicted"] = self.dropped.get("evicted", 0) + lost
                self._evicted_unlogged += lost
                self._say_evicted()
        return True

    def _say_evicted(self, *, now_or_never: bool = False) -> None:
        """Log the evictions not logged yet: at once, then at most every :data:`EVICTED_LOG_EVERY` seconds, a
        timer saying what came meanwhile (``now_or_never``: at once whatever the rate, and no timer)."""
        if not self._evicted_unlogged:
            return
        now = time.monotonic()
        if now < self._evicted_log_at and not now_or_never:
            if self._evicted_timer is None:
                self._evicted_timer = asyncio.get_running_loop().call_later(self._evicted_log_at - now,
                                                                            self._evicted_due)
            return
        if self._evicted_timer is not None:
            self._evicted_timer.cancel()
            self._evicted_timer = None
        log.warning("spool %s: full: drop_oldest deleted its oldest records, %d events not delivered (counted as "
                    "dropped, evicted)", self.spool.dir, self._evicted_unlogged)
        self._evicted_unlogged, self._evicted_log_at = 0, now + EVICTED_LOG_EVERY

    def _evicted_due(self) -> None:
        self._evicted_timer = None
        self._say_evicted()

    def put_nowait(self, event: Event, receipt: Receipt | None = None) -> bool:
        return self._offer(event, receipt, wal.record_size(event))

    def _offer(self, event: Event, receipt: Receipt | None, size: int) -> bool:
        if self._closed:
            self._count("closed", receipt, event)
            return False
        if size > self.largest:  # whatever the policy: no spool of that size can ever hold it
            self._count("spool_full", receipt, event, Undeliverable(
                f"a {size}-byte spool record, larger than the sink's spool_max_bytes ({self.spool.max_bytes}) "
                f"leaves room for ({self.largest})"))
            return False
        if not self._make_room(size):
            self._count("spool_full", receipt, event)
            return False
        self._append(event, size, receipt)
        return True

    async def _room_for(self, size: int) -> None:
        """With ``block``, wait until a record of ``size`` bytes fits (or the queue closes)."""
        if self.overflow == "block" and not self._closed and not self._fits(size) and size <= self.largest:
            self.blocked += 1
            while not self._fits(size) and not self._closed:
                self._not_full.clear()
                await self._not_full.wait()

    async def put(self, event: Event, receipt: Receipt | None = None) -> bool:
        size = wal.record_size(event)
        await self._room_for(size)
        if not self._offer(event, receipt, size):
            return False
        if self.spool.fsync == "always":
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((self._gen + 1, fut, None))
            await fut
        return True

    async def put_many(self, events: Sequence[Event], receipt: Receipt | None = None) -> None:
        """Enqueue each of ``events`` in order; with ``spool_fsync = "always"``, wait for one fsync at the end."""
        offered = False
        for event in events:
            size = wal.record_size(event)
            await self._room_for(size)
            offered = self._offer(event, receipt, size) or offered
        if offered and self.spool.fsync == "always":
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((self._gen + 1, fut, None))
            await fut

    def _append(self, event: Event, size: int, receipt: Receipt | None) -> None:
        self._wbuf.append(event)
        self._wbuf_bytes += size
        self.enqueued += 1
        if receipt is not None:
            self._waiters.append((self._gen + 1, receipt, event))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._write_out)

    # --- writing and syncing -----------------------------------------------------------------------

    def _write_out(self) -> None:
        self._scheduled = False
        if not self._wbuf or self._released:
            return
        try:
            self.spool.append(self._wbuf)
        except SinkError as exc:
            if str(exc) != self._write_error:
                log.error("%s (kept in memory, retrying)", exc)
            self._write_error = str(exc)
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_later(1.0, self._write_out)
            return
        self._write_error = None
        self._wbuf, self._wbuf_bytes = [], 0
        self._gen += 1
        self._not_empty.set()
        if self.spool.fsync == "never":
            self._synced_gen = self._gen
            self._release()
        elif self._waiters:
            self._kick()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.sync_interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._kick()

    def _kick(self) -> None:
        """Start an fsync of everything written so far, unless one is running (it re-kicks when done)."""
        if self._syncing or self._synced_gen >= self._gen:
            return
        self._syncing = True
        gen = self._gen
        job, fds = self.spool.sync_begin()
        fut = asyncio.get_running_loop().run_in_executor(None, job)
        fut.add_done_callback(lambda f: self._synced(f, gen, fds))

    def _synced(self, fut: asyncio.Future[None], gen: int, fds: list[int]) -> None:
        self._syncing = False
        self.spool.sync_end(fds)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("spool %s: fsync failed: %s (retrying)", self.spool.dir, exc)
            asyncio.get_running_loop().call_later(1.0, self._kick)
            return
        self._synced_gen = max(self._synced_gen, gen)
        self._release()
        if self._waiters:
            self._kick()
        elif self._synced_gen < self._gen and self._timer is None:  # written while this sync ran
            self._timer = asyncio.get_running_loop().call_later(self.sync_interval, self._on_timer)

    def _release(self) -> None:
        keep: list[_Waiter] = []
        for gen, w, event in self._waiters:
            if gen > self._synced_gen:
                keep.append((gen, w, event))
            elif isinstance(w, Receipt):
                w.done_one(event)
            elif not w.done():
                w.set_result(None)
        self._waiters = keep

    # --- the worker's side -------------------------------------------------------------------------

    async def get_batch(self, limit: int) -> list[tuple[Event, Receipt | None]]:
        """Wait for at least one record; up to ``limit`` in spool order (empty once closed and drained)."""
        while True:
            self._write_out()
            events = self.spool.read(limit, self._close_at)
            if events:
                self.handed = self.spool.last_read
                return [(e, None) for e in events]
            if self._closed:
                return []
            self._not_empty.clear()
            await self._not_empty.wait()

    def read_again(self) -> int:
        """A new reader starts here: what an earlier reader was handed and its sink did not confirm is read
        again (see :meth:`Spool.rewind`); returns how many records that is."""
        n = self.spool.rewind()
        self.handed = self.spool.last_read
        return n

    def commit(self, index: int) -> None:
        """The sink has taken and flushed every record up to ``index``: trim the spool."""
        if self.spool.commit(index):
            self._not_full.set()

    def requeue_front(self, batch: Sequence[tuple[Event, Receipt | None]]) -> None:
        raise NotImplementedError("a spooled batch is re-read from disk after a restart, not requeued")

    def close(self) -> None:
        """No more puts; the worker drains what was put before (a reloaded queue may share the spool)."""
        if self._closed:
            return
        self._write_out()
        self._close_at = self.spool.next_index - 1
        super().close()
        self._not_full.set()
        self._say_evicted(now_or_never=True)  # no put can evict any more: what was held back is said now

    async def aclose(self) -> None:
        """Write out and fsync what is buffered, then release the spool (call after the worker ended)."""
        self._write_out()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._syncing:
            await asyncio.sleep(0.005)
        self._released = True
        await asyncio.get_running_loop().run_in_executor(None, self.spool.release)
        self._synced_gen = self._gen
        self._release()


def queue_for(common: SinkCommon) -> SinkQueue:
    """A ``[[sinks]]`` entry's queue: in memory, or a :class:`SpoolQueue` when ``spool`` is set.

    The spool is salvaged here (never refused because of damage; see
    :attr:`Spool.report`); a spool directory that cannot be created or is
    locked by another process is a :class:`SinkError`.
    """
    if not common.spool:
        return SinkQueue(common.queue_size, common.overflow)
    try:
        spool = Spool.shared(common.spool, max_bytes=common.spool_max_bytes, fsync=common.spool_fsync)
    except (FileExistsError, NotADirectoryError):  # a file where the directory goes, or above it
        raise NotADirectoryError(f"spool {common.spool}: not a directory (a file is in the way)") from None
    except OSError as exc:
        raise SinkError(f"{common.uri}: spool {common.spool}: {exc.strerror or exc}") from None
    q = SpoolQueue(spool, common.overflow, maxsize=common.queue_size)
    report = spool.report
    if spool.refs == 1:
        if report.pending:
            log.info("sink %s: %d events left in the spool %s; sending them first", common.uri, report.pending,
                     spool.dir)
        # routed to the sink by this process now, and those its salvage found lost (which the sink's worker
        # counts as dropped, spool_damaged): counted, so that enqueued = sent + dropped + depth + in hand holds
        # from the start (a reload sharing the open spool counts nothing again)
        q.enqueued += report.pending + report.missing + report.damaged
    return q
