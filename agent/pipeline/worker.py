"""Moves batches from one sink's queue into the sink, retrying what fails.

Whatever goes wrong on the way is this sink's failure and no one else's: a
:class:`~agent.errors.SinkError` (the sink is down), any other exception from
the sink's ``open``, ``send`` or ``flush`` (a bug in the sink, an unexpected
``OSError``), and an error reading the sink's spool or writing its cursor. Each
is counted in the sink's :class:`~.stats.SinkStats` (``send_errors``,
``healthy``, ``last_error``), logged once per distinct message (with a
traceback when it is neither an :class:`~agent.errors.AgentError` nor an
``OSError``), and retried with full-jitter backoff; the worker never ends
because of it, so the agent and the other sinks go on. The batch being retried
stays in the worker and the spool is trimmed only after the sink flushed it
(at-least-once). Records a damaged spool loses are counted in the queue's
``dropped["spool_damaged"]``.
"""

from __future__ import annotations

import logging
import math
import time

import anyio

from ..errors import AgentError, SinkError, Undeliverable
from ..model import Event
from ..sinks.base import Sink
from ..transport.sender import Backoff
from .queue import Receipt, SinkQueue
from .spoolqueue import SpoolQueue
from .stats import SinkStats

__all__ = ["SinkWorker", "backoff_delays"]

log = logging.getLogger("hoststamp.sink")

CLOSE_TIMEOUT = 5.0  #: seconds a closing worker gives its sink to confirm (flush) and close
#: seconds a sink has to close when the drain's deadline has passed already
CLOSE_LAST_MOMENT = 0.25
#: what a sink's reason for leaving an event out tells its sender
_LEFT_OUT = {"too_large": "too large"}


def backoff_delays(base: float = 0.1, cap: float = 10.0) -> Backoff:
    """A sink's retry delays: full-jitter exponential backoff, as the socket senders use."""
    return Backoff(base, cap)


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
        backoff: Backoff | None = None,
        label: str | None = None,
    ) -> None:
        self.sink = sink
        #: how logs (and senders told of a failure) name the sink: its label (``URI #2``, no password), or URI
        self.label = label or sink.uri
        self.queue = queue
        self.stats = stats
        self.batch_max = batch_max
        self.flush_interval = flush_interval
        self._backoff = backoff or backoff_delays()
        self._opened = False
        self._last_flush = time.monotonic()
        #: events taken by the sink, with their receipts, waiting for the next flush to confirm them
        self._unflushed: list[tuple[Event, Receipt]] = []
        #: id(event) -> the event (held: its id is not reused) and why it was left out or refused, until the next flush
        self._left: dict[int, tuple[Event, str]] = {}
        #: set once the queue is drained and the sink closed (or the worker was cancelled)
        self.finished = False
        #: events taken from the queue that the sink has not accepted yet (a batch being retried)
        self.holding = 0
        #: events the sink took but did not confirm when it was closed (at least 1 when it cannot tell how many)
        self.unconfirmed = 0
        #: the drain's deadline (``time.monotonic()``), when one is set: the sink's last attempt to close ends by it
        self.close_by: float | None = None
        #: a reload removed this sink: what it never confirmed is settled, not failed (:meth:`_fail_unconfirmed`)
        self.removed = False
        #: the batch being sent (retried while the sink is down), and whether :meth:`take_in_hand` took it
        self._in_hand: list[tuple[Event, Receipt | None]] | None = None
        self._handed_on = False
        self._dirty = False
        self._logged: str | None = None  #: the failure last logged: said once until a flush confirms again
        self._spool = queue if isinstance(queue, SpoolQueue) else None  # trimmed once the sink took and flushed
        #: the spool records up to here were sent (and are committed at the next flush)
        self._sent_upto = self._spool.spool.committed if self._spool is not None else 0
        #: the spool's count of records lost to damage, as far as it is in ``queue.dropped`` already
        self._lost_seen = self._spool.spool.lost if self._spool is not None else 0
        if self._spool is not None and not self._spool.spool.salvage_counted:
            # and what its start-up salvage found lost, counted the same way, once (a reload's queue shares it)
            self._spool.spool.salvage_counted = True
            report = self._spool.spool.report
            if lost := report.missing + report.damaged:
                dropped = self._spool.dropped
                dropped["spool_damaged"] = dropped.get("spool_damaged", 0) + lost
        stats.dropped = queue.dropped  # the queue counts drops by reason; the stats show the same dict
        #: the sink reported a failure it retries itself and not yet its recovery: not healthy, whatever sends say
        self._troubled = False
        self._reports = 0  #: failures the sink reported itself (each counted when reported)
        #: a send, flush or open failed and was counted, and nothing worked nor was reported since: a failure the
        #: sink reports now is that one (a flush giving up on acks just before the ack timeout drops the link)
        self._counted_unreported = False
        sink.on_trouble = self._trouble
        sink.on_left_out = self._left_out_now

    async def _open(self) -> None:
        while not self._opened:
            before = self._reports
            try:
                await self.sink.open()
                self._opened = True
                self._counted_unreported = False
                self.stats.healthy = not self._troubled
            except Exception as exc:  # any failure of one sink is retried, never the end of the agent
                self._failed(exc, "open", told=self._told_since(before))
                with anyio.move_on_after(self._backoff.next()):  # cut short by a stop, unless stopping already
                    await (anyio.sleep(math.inf) if self.queue.closed else self.queue.wait_closed())
                if self.queue.closed and not len(self.queue) and (self._spool is None or not self._spool.pending):
                    return  # stopping, and nothing for this sink: no need to open it (nor to wait for the deadline)
        self._backoff.reset()

    def _trouble(self, error: str | None) -> None:
        """The sink's own report of a failure it retries in the background (it logged it), or of recovery."""
        self._troubled = error is not None
        if error is None:
            self.stats.healthy = True
            return
        self._reports += 1
        if self._counted_unreported:
            self._counted_unreported = False
        else:
            self.stats.send_errors += 1
        self.stats.healthy = False
        self.stats.last_error = error

    def _left_out_now(self) -> None:
        """The sink has events to report as left out or refused while what was sent before them still waits for
        its confirmation (a downstream that refuses some events and holds others): they are counted as dropped
        now, and a guest that sent one is told now, not at the next flush, which may be far off."""
        left = self._left_out()
        if not left or not self._unflushed:
            return
        waiting = []
        for e, r in self._unflushed:
            if (reason := _left_of(left, e)) is not None:
                r.drop(e, self._undeliverable(reason))
            else:
                waiting.append((e, r))
        self._unflushed = waiting

    def _told_since(self, before: int) -> bool:
        """Whether the sink reported a failure since ``before`` (:attr:`_reports`) or is down by its own report:
        a send, flush or open failing then fails of that failure, counted already."""
        return self._troubled or self._reports != before

    def _failed(self, exc: Exception, action: str, *, told: bool | None = None) -> None:
        """Count and log a failure; ``told``: whether the sink reported it itself (None: not a sink operation's)."""
        if not told:
            self.stats.send_errors += 1
        self._counted_unreported = told is False
        self.stats.healthy = False
        foreseen = isinstance(exc, AgentError)
        msg = str(exc) if foreseen else f"{action} failed: {type(exc).__name__}: {exc}"
        if msg != self._logged:  # not last_error: the sink's own reports (:meth:`_trouble`) change that
            if foreseen or isinstance(exc, OSError):
                log.warning("sink %s: %s (retrying)", self.label, msg)
            else:  # not a foreseen failure: a bug, worth a traceback
                log.error("sink %s: %s (retrying)", self.label, msg, exc_info=exc)
        self.stats.last_error = self._logged = msg

    async def _get_batch(self) -> list[tuple[Event, Receipt | None]]:
        """The next batch; an error reading the spool is retried here."""
        failed = False
        while True:
            try:
                batch = await self.queue.get_batch(self.batch_max)
            except Exception as exc:
                self._failed(exc, "reading the spool")
                failed = True
                await anyio.sleep(self._backoff.next())
                continue
            finally:
                self._count_lost()
            if failed:
                self._backoff.reset()
            return batch

    def _count_lost(self) -> None:
        if self._spool is not None and (lost := self._spool.spool.lost) != self._lost_seen:
            dropped = self.queue.dropped
            dropped["spool_damaged"] = dropped.get("spool_damaged", 0) + lost - self._lost_seen
            self._lost_seen = lost

    async def run(self) -> None:
        """Until the queue is closed and drained; then flush and close the sink."""
        if self._spool is not None:  # what a reader before this one sent without confirmation is sent again
            if again := self._spool.read_again():
                log.info("sink %s: %d spooled events sent before and not confirmed are sent again", self.label,
                         again)
            # what the reader before counted as sent is routed here again: it counts again (enqueued, then sent)
            self.queue.enqueued += min(again, self.stats.resent)
            self.stats.resent = 0
            self._sent_upto = self._spool.spool.committed
            self._lost_seen = self._spool.spool.lost  # what a reader before this one lost, it counted
        batch: list[tuple[Event, Receipt | None]] | None = None
        try:
            await self._open()
            while True:
                batch = None
                with anyio.move_on_after(self.flush_interval if self._dirty else math.inf):
                    batch = await self._get_batch()
                if batch is None:  # idle with unflushed data: make it durable now
                    await self._flush()
                    continue
                if not batch:
                    break
                events = [e for e, _r in batch]
                upto = self._spool.handed if self._spool is not None else 0
                self.holding = len(events)
                self._in_hand = batch
                while True:
                    before = self._reports
                    try:
                        await self.sink.send(events)
                        self._counted_unreported = False
                        break
                    except Exception as exc:
                        self._failed(exc, "send", told=self._told_since(before))
                        await anyio.sleep(self._backoff.next())
                self._backoff.reset()
                self.holding = 0
                self._in_hand = None
                self._sent_upto = upto
                self.stats.healthy = not self._troubled
                left = self._left_out()
                self.stats.duplicates += self.sink.take_duplicates()
                # what the sink left out of this very batch was not sent (a refusal that comes later with an
                # ack was: it counts as sent and as dropped.refused)
                sent = len(events) - (sum(1 for e in events if _left_of(left, e)) if left else 0)
                self.stats.sent += sent
                self.stats.batches += 1
                self._dirty = True
                for e, r in batch:
                    if r is None:
                        continue
                    if left and (reason := _left_of(left, e)) is not None:
                        r.drop(e, self._undeliverable(reason))
                    else:
                        self._unflushed.append((e, r))
                batch = None  # its receipts are settled or in _unflushed now
                if ((self._unflushed or self._spool is not None) and len(self.queue) == 0) or (
                    time.monotonic() - self._last_flush >= self.flush_interval
                ):
                    await self._flush()
        finally:
            # one bounded attempt (a sink that is down holds no shutdown) by the drain's deadline, and a last moment
            close_in = CLOSE_TIMEOUT
            if self.close_by is not None:
                close_in = min(CLOSE_TIMEOUT, max(CLOSE_LAST_MOMENT, self.close_by - time.monotonic()))
            with anyio.move_on_after(close_in, shield=True) as closing:
                if self._opened:
                    said = None
                    try:
                        await self._flush(retry=False)
                    except Exception as exc:  # what was not confirmed stays in the spool, or is lost without one
                        said = str(self.stats.last_error or exc)
                        log.error("sink %s: close failed: %s", self.label, said)
                        self.unconfirmed = self._unconfirmed()
                    try:
                        await self.sink.aclose()
                    except Exception as exc:
                        if str(exc) != said:  # the close's own failure, not the flush's said again
                            log.error("sink %s: close failed: %s", self.label, exc)
            if closing.cancelled_caught and self._opened:
                # cut short, maybe before the sink's own close: what it runs (a sender reconnecting) stops now
                abort = getattr(self.sink, "abort", None)
                if abort is not None:
                    abort()
            if closing.cancelled_caught:
                self.unconfirmed = self._unconfirmed()
                what = f"{self.unconfirmed} events" if hasattr(self.sink, "unacked") else "what it took"
                if self._spool is not None:
                    log.warning("sink %s: not confirmed within %.3gs of closing; %s stay in the spool and are sent "
                                "again at the next start", self.label, close_in, what)
                elif self.unconfirmed:
                    log.error("sink %s: not confirmed within %.3gs of closing; %s may be lost", self.label,
                              close_in, what)
            if self._spool is None:  # with a spool, what is left is kept in it, its senders acked already
                self._fail_unconfirmed(None if self._handed_on else batch)
            else:  # counted as sent, not confirmed: a reload's next reader of the spool sends them again
                self.stats.resent = max(0, self._sent_upto - self._spool.spool.committed)
            self.holding = 0  # what was in hand is failed, handed on or spooled: not held (nor shown so) any more
            self.finished = True

    def take_in_hand(self) -> tuple[list[tuple[Event, Receipt | None]], int]:
        """What this worker's sink took and was never acknowledged, then the batch it is still trying to send (no
        spool: nowhere else holds them), taken away to be sent by another (a reload's successor); the worker,
        stopped next, leaves them alone. Also how many its sink took (counted sent: they count again there)."""
        taken = getattr(self.sink, "take_unsent", None)
        unsent: list[Event] = taken() if taken is not None else []  # taken by the sink, never acknowledged
        receipts = {id(e): r for e, r in self._unflushed}
        if unsent:
            moved = {id(e) for e in unsent}
            self._unflushed = [(e, r) for e, r in self._unflushed if id(e) not in moved]
        batch, self._in_hand = self._in_hand or [], None
        self._handed_on = True
        self.holding = 0
        return [*((e, receipts.get(id(e))) for e in unsent), *batch], len(unsent)

    def _fail_unconfirmed(self, batch: list[tuple[Event, Receipt | None]] | None) -> None:
        """The worker stops (a shutdown, a reload) with events it never had confirmed: taken unconfirmed, being
        sent, or still queued. Their senders are told it failed (they send them again), rather than being left
        waiting, and their duplicates with them, on a receipt nothing will ever complete. A sink a reload
        ``removed`` settles them instead: the sinks of the configuration now running have them, and a sender
        told to send them again would give those sinks every one twice (its own losses are logged and counted)."""
        why = SinkError(f"sink {self.label} stopped before confirming the event")
        for event, receipt in [*self._unflushed, *(batch or ()), *self.queue.take_all()]:
            if receipt is not None and self.removed:
                receipt.done_one(event)
            elif receipt is not None:
                receipt.fail(why)
        self._unflushed = []

    def _left_out(self) -> dict[int, tuple[Event, str]]:
        """What the sink left out of the batches it took (too large for it) or its downstream refused, since
        the last flush, counted as dropped by reason (``too_large``, ``refused``): id(event) -> (event, reason)."""
        dropped = self.queue.dropped
        for event, reason in self.sink.take_dropped():
            key = reason.split(":", 1)[0]
            dropped[key] = dropped.get(key, 0) + 1
            self._left[id(event)] = (event, reason)
        return self._left

    def _undeliverable(self, reason: str) -> Undeliverable:
        """What a guest whose event was left out or refused is told: dropped for good, and why."""
        if reason.startswith("refused: "):
            return Undeliverable(f"refused by sink {self.label}: {reason.removeprefix('refused: ')}")
        return Undeliverable(f"{_LEFT_OUT.get(reason, reason)} for sink {self.label}")

    def _unconfirmed(self) -> int:
        """What the sink holds unconfirmed: its own count when it keeps one (without a spool, less what it took
        of the batch in hand, which the drain counts whole as dropped), else the events taken since the last
        confirmed flush (at least 1: something was not confirmed)."""
        n = getattr(self.sink, "unacked", None)
        if not isinstance(n, int):
            return max(len(self._unflushed), 1)
        partly = getattr(self.sink, "partly_taken", 0) if self._spool is None and self.holding else 0
        return max(n - partly, 0) if partly else max(n, 1)

    async def _flush(self, *, retry: bool = True) -> None:
        """Have the sink confirm what it took, then trim the spool up to it (each step retried until it works)."""
        failed = False
        while True:
            before = self._reports
            try:
                await self.sink.flush()
                self._counted_unreported, self._logged = False, None
                break
            except Exception as exc:
                self._failed(exc, "flush", told=self._told_since(before))
                failed = True
                if not retry:
                    raise
                await anyio.sleep(self._backoff.next())
        self._last_flush = time.monotonic()
        self._dirty = False
        while self._spool is not None:
            try:
                self._spool.commit(self._sent_upto)
                break
            except Exception as exc:  # the records stay in the spool: they are sent again after a restart
                self._failed(exc, "trimming the spool")
                failed = True
                if not retry:
                    raise
                await anyio.sleep(self._backoff.next())
        if failed:  # confirmed and recorded after all
            self.stats.healthy = not self._troubled
            self._backoff.reset()
        left = self._left_out()  # every refusal of what was flushed has come with its ack
        taken, self._unflushed, self._left = self._unflushed, [], {}
        for e, r in taken:
            if left and (reason := _left_of(left, e)) is not None:
                r.drop(e, self._undeliverable(reason))
            else:
                r.done_one(e)


def _left_of(left: dict[int, tuple[Event, str]], event: Event) -> str | None:
    """Why ``event`` was left out or refused, if it was."""
    entry = left.get(id(event))
    return entry[1] if entry is not None and entry[0] is event else None
