"""What became of each frame of a guest connection, and the acks that say so.

A :class:`~.connection.Connection` reads frames and hands them on; this, its
base, keeps their fate. In flight are runs of frames in frame order: the
future deciding them (None for a frame settled or refused already), where the
first one's answer is in that future's result (-1: the result answers for each
alike), and how many frames. A future's result is None or True (all taken),
False (dropped), or a list with each event's own answer; an exception is a
refusal if it is :class:`~.validate.Rejected` and a delivery failure
otherwise, which closes the connection without acking what is unsettled.

The settler waits for each run's fate in frame order; refusals are reported
as soon as they are known (a drop told before its batch completes, an answer
that comes while earlier frames still wait); the acker sends cumulative acks,
and refusals, as frames settle, repeating the last one as a heartbeat while
frames wait on the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..codec.framing import encode_frame
from ..errors import TransportError
from ..transport import ByteStream
from ..transport.ack import ack_payloads
from .answers import all_taken, refusal, why
from .validate import Rejected

if TYPE_CHECKING:
    from .server import Receiver

__all__ = ["FrameLedger"]


class _Delivery(TransportError):
    """Delivery of a frame failed (not a refusal): the connection ends without acking it."""


#: frames in flight, in frame order: the future deciding them (None: settled or refused already), the position
#: of the first one's answer in its result (-1: the result answers for each alike), and how many frames
_Entry = tuple["asyncio.Future[Any] | None", int, int]


class FrameLedger:
    """The frames of one connection from when they are handed on until they are acked."""

    def __init__(self, rx: Receiver, stream: ByteStream) -> None:
        self.rx = rx
        self.stream = stream
        self.peer = stream.peer
        self.many: Callable[..., asyncio.Future[Any]] | None = getattr(rx.deliver, "many", None)
        #: whether ``many`` tells of events it will not take before the batch completes (``on_refusal``)
        self.told = self.many is not None and getattr(rx.deliver, "tells_refusals", False)
        #: and how many of a batch's first events are settled before it completes (``on_progress``)
        self.progressing = self.told and getattr(rx.deliver, "tells_progress", False)
        #: per batch still pending, how many of its first events are settled; and what wakes the settler then
        self._prefix: dict[asyncio.Future[Any], int] = {}
        self._nudge: asyncio.Future[None] | None = None
        #: per batch still pending, whose refusals may come early: (position, count, first frame) of each run of
        #: its frames
        self._runs: dict[asyncio.Future[Any], list[tuple[int, int, int]]] = {}
        self.inflight: deque[_Entry] = deque()
        self.received = 0
        self.settled = 0
        #: refusals not yet sent, and the frames among the unsettled ones already reported
        self.rejected: list[tuple[int, str]] = []
        self.reported: set[int] = set()
        self.more = asyncio.Event()
        self.room = asyncio.Event()
        #: the reader waits for room (frames of this peer may wait unread meanwhile)
        self.waiting = False
        self.dirty = asyncio.Event()
        self.reading = True

    def _refuse(self, frame: int, reason: str, detail: str) -> None:
        """Count, log and report a refusal of ``frame`` once, however many paths notice it."""
        if frame in self.reported:
            return
        self.reported.add(frame)
        self.rx.reject(self.peer, reason, detail)
        if reason == "dropped":
            self.rx.stats.dropped += 1
        self.rejected.append((frame, f"{reason}: {detail}"))
        self.dirty.set()

    def _refused_now(self, reason: str, detail: str) -> None:
        self.received += 1
        self._refuse(self.received, reason, detail)
        self.inflight.append((None, 0, 1))
        self.more.set()

    def _taken(self, handed: int, fut: asyncio.Future[Any]) -> None:
        """A delivery of ``handed`` events answered: count those taken into every sink's queue as accepted
        (not those refused, dropped or failed), once, so that the counter only ever goes up."""
        if fut.cancelled() or fut.exception() is not None:
            return
        res = fut.result()
        if res is None or res is True:
            self.rx.stats.accepted += handed
        elif type(res) is list:
            self.rx.stats.accepted += sum(1 for r in res if r is True)

    def _forget_runs(self, fut: asyncio.Future[Any]) -> None:
        self._runs.pop(fut, None)  # settled now: what is left to report comes with the answer
        self._prefix.pop(fut, None)

    def _progressed(self, box: list[asyncio.Future[Any]], settled: int) -> None:
        """The first ``settled`` events of the batch in ``box`` are settled (what of them was refused has been
        told to :meth:`_told`): their frames may be acked while the rest of the batch still waits."""
        if box and not box[0].done():
            self._prefix[box[0]] = settled
            if self._nudge is not None and not self._nudge.done():
                self._nudge.set_result(None)

    def _told(self, box: list[asyncio.Future[Any]], pos: int, answer: Any) -> None:
        """The delivery of the batch in ``box`` will not take its event ``pos``: refuse its frames now, while
        the rest of the batch still waits (a queue dropped it, or the host could not stamp it)."""
        runs = self._runs.get(box[0]) if box else None
        if not runs:
            return
        said = why(answer)
        if said is None:
            return
        for p, count, first in runs:
            if p <= pos < p + count and (frame := first + pos - p) > self.settled:
                self._refuse(frame, *said)

    def _queue(self, fut: asyncio.Future[Any] | None, pos: int, count: int) -> None:
        """``count`` frames whose fate ``fut`` decides, from ``pos`` in its answer."""
        assert fut is not None
        first = self.received + 1
        runs = self._runs.get(fut)
        if runs is not None:
            runs.append((pos, count, first))
        self.received += count
        self.inflight.append((fut, pos, count))
        # a refusal (a drop) may come while earlier frames are pending: report it early
        if fut.done():
            self._early(first, pos, count, fut)
        else:
            fut.add_done_callback(functools.partial(self._early, first, pos, count))

    def _early(self, first: int, pos: int, count: int, fut: asyncio.Future[Any]) -> None:
        if first + count - 1 <= self.settled or all_taken(fut):
            return
        for k in range(count):
            if first + k > self.settled and (said := refusal(fut, pos + k if pos >= 0 else -1)) is not None:
                self._refuse(first + k, *said)

    async def _settle(self) -> None:
        inflight = self.inflight
        while True:
            if not inflight:
                if not self.reading:
                    return
                self.more.clear()
                await self.more.wait()
                continue
            fut, pos, count = inflight[0]
            first = self.settled + 1
            if fut is not None:
                # part of the batch may be settled already: its first frames are acked now
                if not fut.done() and pos >= 0 and (ahead := self._prefix.get(fut, 0) - pos) > 0:
                    k = min(count, ahead)
                    if k < count:
                        inflight[0] = (fut, pos + k, count - k)
                    else:
                        inflight.popleft()
                    self._count_settled(first, k)
                    continue
                if not fut.done():
                    if self.progressing and fut in self._runs:  # progress may come before the batch completes
                        nudge = self._nudge = asyncio.get_running_loop().create_future()
                        await asyncio.wait((fut, nudge), return_when=asyncio.FIRST_COMPLETED)
                        continue
                    await asyncio.wait((fut,))
                if fut.cancelled() or not (fut.exception() is None or isinstance(fut.exception(), Rejected)):
                    failure = "cancelled" if fut.cancelled() else str(fut.exception())
                    self.rx.reject(self.peer, "pipeline", f"delivery failed: {failure}")
                    raise _Delivery(failure)
                if not all_taken(fut):
                    for k in range(count):
                        if (said := refusal(fut, pos + k if pos >= 0 else -1)) is not None:
                            self._refuse(first + k, *said)
            inflight.popleft()
            self._count_settled(first, count)

    def _count_settled(self, first: int, count: int) -> None:
        """Frames ``first`` .. ``first + count - 1`` are settled (those refused among them reported already)."""
        if self.reported:
            for k in range(count):
                self.reported.discard(first + k)
        self.settled += count
        self.dirty.set()
        self.room.set()

    async def _send_ack(self) -> None:
        self.dirty.clear()
        rejected, self.rejected = self.rejected, []
        self.room.set()
        await self.stream.send(b"".join([encode_frame(p) for p in ack_payloads(self.settled, rejected)]))

    async def _ack(self) -> None:
        """Send acks as frames settle; while frames wait on the pipeline (or, unread, for room in it), repeat the
        last one as a heartbeat."""
        heartbeat = self.rx.heartbeat
        with contextlib.suppress(TransportError):
            while True:
                try:
                    async with asyncio.timeout(heartbeat):
                        await self.dirty.wait()
                except TimeoutError:
                    if not self.inflight and not self.waiting:
                        continue
                await self._send_ack()
