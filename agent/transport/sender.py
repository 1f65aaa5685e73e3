"""The upstream side of the ack protocol: at-least-once delivery over a reconnecting stream.

:class:`AckedSender` takes items (:meth:`put`), writes their payloads as
frames, reads acks, and forgets an item only once an ack settles it. When the
connection fails (error, EOF, or no ack progress for ``ack_timeout``), it
reconnects with full-jitter exponential backoff and sends every unsettled item
again, in the original order, on the new connection. Items live in memory
only: what survives a crash of this process is the spool's business.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..codec.framing import DEFAULT_MAX_FRAME, LengthPrefixedDecoder, encode_frame
from ..errors import FramingError, TransportError
from .ack import Outbox, decode_ack
from .base import ByteStream, Dialer

__all__ = ["AckedSender", "Backoff", "SenderStats"]

#: the reason word of an item no frame can carry (refused here, not by the downstream)
TOO_LARGE = "too_large"

log = logging.getLogger("agent.transport.sender")

T = TypeVar("T")

#: called with the items an ack settled, and the refused ones with their reasons
OnSettled = Callable[[list[T], list[tuple[T, str]]], None]


class Backoff:
    """Full-jitter exponential backoff: delay ``n`` is uniform in ``[0, min(maximum, initial * 2**n)]``."""

    def __init__(self, initial: float = 0.1, maximum: float = 30.0, rng: Callable[[], float] = random.random) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self.attempt = 0

    def ceiling(self) -> float:
        return min(self.maximum, self.initial * 2.0 ** min(self.attempt, 64))

    def next(self) -> float:
        delay = self._rng() * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class SenderStats:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    ack_timeouts: int = 0
    frames_sent: int = 0
    frames_resent: int = 0
    acked: int = 0
    rejected: int = 0
    too_large: int = 0


class AckedSender(Generic[T]):
    """Reliable, ordered sending of ``payload(item)`` frames to whatever ``dial`` connects to."""

    def __init__(self, dial: Dialer, payload: Callable[[T], bytes], *, name: str,
                 max_unacked: int = 10000, max_frame: int = DEFAULT_MAX_FRAME, ack_timeout: float = 30.0,
                 backoff: Backoff | None = None, on_settled: OnSettled[T] | None = None,
                 write_batch: int = 256, on_trouble: Callable[[str | None], None] | None = None) -> None:
        if max_unacked < 1:
            raise ValueError("max_unacked must be at least 1")
        #: what log lines and errors call the sender (a sink may rename it to its label)
        self.name = name
        #: what the dialer's errors begin with (the endpoint's URI: the name first given)
        self._dial_name = name
        self._dial = dial
        self._payload = payload
        self.max_unacked = max_unacked
        self.max_frame = max_frame
        self.ack_timeout = ack_timeout
        self.backoff = backoff or Backoff()
        self._on_settled = on_settled
        #: told of each connection failure (what went wrong) and of each connect after one (None)
        self._on_trouble = on_trouble
        self._write_batch = write_batch
        self._outbox: Outbox[T] = Outbox()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._carry = 0
        self._owed_since = 0.0
        self._acked_on_conn = False
        self._failing = False
        #: the last failure was a connect that failed (so a connect is news)
        self._dial_failed = False
        #: the error last logged as a warning, and whether anything was delivered since (else the same error
        #: again, after a reconnect to a downstream that fails the same way, is not news)
        self._warned: str | None = None
        self._delivered_since_warned = False
        self._seen_reasons: set[str] = set()
        self.connected = False
        self.last_error: str | None = None
        self.stats = SenderStats()

    @property
    def pending(self) -> int:
        """Items taken and not yet settled."""
        return len(self._outbox)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sender {self.name}")

    async def put(self, items: Sequence[T], timeout: float | None = None) -> None:
        """Take ``items``, waiting (up to ``timeout``) while ``max_unacked`` are unsettled.

        A payload that is empty or over ``max_frame`` can never be delivered: it
        is settled as refused (reason ``too_large: ...``) instead of being queued,
        once the others are taken (a put that times out takes nothing, so the same
        items put again are not refused twice).
        """
        self.start()
        ok: list[T] = []
        refused: list[tuple[T, str]] = []
        for item in items:
            n = len(self._payload(item))
            if 1 <= n <= self.max_frame:
                ok.append(item)
            else:
                refused.append((item, f"{TOO_LARGE}: frame of {n} bytes outside 1..{self.max_frame}"))
        if ok:
            await self._wait_for(lambda: not self._outbox or len(self._outbox) + len(ok) <= self.max_unacked,
                                 timeout, "no room: downstream is not acknowledging")
            self._outbox.add(ok)
            self._wake.set()
        if refused:
            self.stats.too_large += len(refused)
            self._settled([], refused)

    async def put_as_room_allows(self, items: Sequence[T], timeout: float | None = None,
                                 taken: Callable[[int], None] | None = None) -> None:
        """:meth:`put` ``items`` a part at a time, each as large as the window (``max_unacked``) has room for
        then, so that never more are unsettled and, whatever the batches, the window fills (a receiver may ack
        only every so many frames); ``taken(n)`` is told of each part taken, so that a caller whose put timed
        out can go on after what was taken."""
        start = 0
        while start < len(items):
            part = items[start : start + max(1, self.max_unacked - len(self._outbox))]
            await self.put(part, timeout=timeout)
            start += len(part)
            if taken is not None:
                taken(len(part))

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every item taken so far is settled; TransportError after ``timeout``."""
        if self._outbox:
            self.start()
            await self._wait_for(lambda: not self._outbox, timeout, "not acknowledged")

    def take_unsettled(self) -> list[T]:
        """Stop (:meth:`abort`) and hand over every item taken and not settled, in order."""
        self.abort()
        items = self._outbox.take_all()
        self._progress.set()
        return items

    def abort(self) -> None:
        """Stop without waiting: the sending task is cancelled and ends by itself; unsettled items are dropped."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        """Stop at once; unsettled items are dropped (drain first to keep them)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            # gather, not suppress(CancelledError): a cancellation of our caller must still reach it
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _wait_for(self, cond: Callable[[], bool], timeout: float | None, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not cond():
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            detail = f" (last error: {self.last_error})" if self.last_error else ""
            raise TransportError(f"{self.name}: {self.pending} {what} after {timeout}s{detail}") from None

    def _settled(self, done: list[T], refused: list[tuple[T, str]]) -> None:
        self.stats.acked += len(done)
        self.stats.rejected += len(refused)
        for _item, reason in refused:
            key = reason.split(":", 1)[0]
            if key not in self._seen_reasons and len(self._seen_reasons) < 64:
                self._seen_reasons.add(key)
                if key == TOO_LARGE:  # left out here, before sending: the downstream never saw it
                    log.warning("%s: an event no frame can carry was not sent: %s", self.name, reason)
                else:
                    log.warning("%s: downstream refused an event: %s", self.name, reason)
        if self._on_settled is not None:
            self._on_settled(done, refused)
        self._progress.set()

    async def _run(self) -> None:
        while not self._closing:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                stream = await self._dial()
            except TransportError as exc:
                self.stats.connect_failures += 1
                self._dial_failed = True
                self._note_failure(str(exc))
                await asyncio.sleep(self.backoff.next())
                continue
            self.stats.connects += 1
            if self._failing:
                if self._dial_failed:
                    log.info("%s: connected", self.name)
                self._failing = False
                if self._on_trouble is not None:
                    self._on_trouble(None)
            self._dial_failed = False
            await self._serve(stream)
            self.stats.disconnects += 1
            if self._acked_on_conn:
                self.backoff.reset()
            else:
                await asyncio.sleep(self.backoff.next())

    def _note_failure(self, error: str) -> None:
        # said once, by the log line's own prefix
        error = error.removeprefix(f"{self.name}: ").removeprefix(f"{self._dial_name}: ")
        self.last_error = error
        if self._on_trouble is not None:
            self._on_trouble(error)
        # a warning for the first failure, again whenever the cause changes (the log never shows a stale one), and
        # again once something was delivered since; not for the same failure after each reconnect
        if error != self._warned or self._delivered_since_warned:
            log.warning("%s: %s (retrying with backoff)", self.name, error)
            self._warned = error
            self._delivered_since_warned = False
        else:
            log.debug("%s: %s", self.name, error)
        self._failing = True

    async def _serve(self, stream: ByteStream) -> None:
        self._outbox.reconnected()
        self.stats.frames_resent += self._carry
        self._acked_on_conn = False
        self.connected = True
        writer = asyncio.ensure_future(self._write_loop(stream))
        reader = asyncio.ensure_future(self._read_loop(stream))
        try:
            done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if isinstance(exc, TransportError):
                    self._note_failure(str(exc))
                elif exc is not None:
                    log.error("%s: sending failed unexpectedly", self.name, exc_info=exc)
                    self.last_error = repr(exc)
                elif self._outbox:
                    self._note_failure(f"{stream.peer}: connection closed by peer")
                else:  # nothing owed: a downstream closing an idle connection is no failure
                    log.debug("%s: %s closed the idle connection", self.name, stream.peer)
        finally:
            self.connected = False
            for t in (writer, reader):
                t.cancel()
            await asyncio.gather(writer, reader, return_exceptions=True)
            await stream.aclose()
            self._carry = self._outbox.in_flight
            self._progress.set()

    async def _write_loop(self, stream: ByteStream) -> None:
        max_frame = self.max_frame
        payload = self._payload
        while True:
            self._wake.clear()
            was_idle = self._outbox.in_flight == 0
            items = self._outbox.take_unsent(self._write_batch)
            if not items:
                await self._wake.wait()
                continue
            if was_idle:  # acks are owed from now on
                self._owed_since = asyncio.get_running_loop().time()
            data = b"".join([encode_frame(payload(i), max_frame) for i in items])
            await stream.send(data)
            self.stats.frames_sent += len(items)

    async def _read_loop(self, stream: ByteStream) -> None:
        dec = LengthPrefixedDecoder(self.max_frame)
        clock = asyncio.get_running_loop().time
        last_heard = clock()
        while True:
            try:
                async with asyncio.timeout(self.ack_timeout / 4):
                    chunk = await stream.receive()
            except TimeoutError:
                # dead: frames are owed acks and nothing (not even a heartbeat) came for ack_timeout
                if self._outbox.in_flight and clock() - max(last_heard, self._owed_since) >= self.ack_timeout:
                    self.stats.ack_timeouts += 1
                    raise TransportError(f"{stream.peer}: no ack for {self.ack_timeout}s") from None
                continue
            if not chunk:
                return
            last_heard = clock()
            try:
                dec.feed(chunk)
                for frame in dec.frames():
                    done, refused = self._outbox.settle(decode_ack(frame))
                    if done or refused:
                        self._acked_on_conn = True
                        self._delivered_since_warned = True
                        self._settled(done, refused)
            except FramingError as exc:
                raise TransportError(f"{stream.peer}: bad ack stream: {exc}") from None
