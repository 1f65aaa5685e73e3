"""One guest connection of a :class:`~.server.Receiver`: frames in, events handed on, acks out.

Three tasks share the connection: the reader deframes and checks what arrives
and hands the new events of each read on (all at once when ``deliver`` takes
batches); the settler waits for each run of frames' fate in frame order; the
acker sends cumulative acks (and refusals, early) as frames settle, repeating
the last one as a heartbeat while frames wait on the pipeline.

In flight are runs of frames in frame order: the future deciding them (None
for a frame settled or refused already), where the first one's answer is in
that future's result (-1: the result answers for each alike), and how many
frames. A future's result is None or True (all taken), False (dropped), or a
list with each event's own answer; an exception is a refusal if it is
:class:`~.validate.Rejected` and a delivery failure otherwise, which closes
the connection without acking what is unsettled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..codec.framing import LengthPrefixedDecoder, encode_frame
from ..errors import FramingError, TransportError
from ..transport import ByteStream
from ..transport.ack import ack_payloads
from .answers import all_taken, refusal, why
from .dedupe import channel_of
from .intake import sort_frames
from .validate import Rejected

if TYPE_CHECKING:
    from .server import Receiver

__all__ = ["MAX_UNSENT_REFUSALS", "Connection"]

log = logging.getLogger("agent.receiver")

#: refusals waiting to be sent at which a connection stops being read (a guest that never reads its acks)
MAX_UNSENT_REFUSALS = 4096
#: seconds between looks at whether a peer whose connection is not being read has hung up
HANGUP_POLL = 0.25


class _Delivery(TransportError):
    """Delivery of a frame failed (not a refusal): the connection ends without acking it."""


#: frames in flight, in frame order: the future deciding them (None: settled or refused already), the position
#: of the first one's answer in its result (-1: the result answers for each alike), and how many frames
_Entry = tuple["asyncio.Future[Any] | None", int, int]


class Connection:
    def __init__(self, rx: Receiver, stream: ByteStream) -> None:
        self.rx = rx
        self.stream = stream
        self.peer = stream.peer
        self.channel = channel_of(stream.peer)
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
        self._reader: asyncio.Future[None] | None = None
        self._stopped = False

    def stop_reading(self) -> None:
        """Read nothing more (the agent is shutting down): what was taken settles and is acked, as after the
        guest's end of input; frames not taken yet are not acked, and the guest sends them again."""
        self._stopped = True
        if self._reader is not None:
            self._reader.cancel()

    async def run(self) -> None:
        settler = asyncio.ensure_future(self._settle())
        acker = asyncio.ensure_future(self._ack())
        reader = self._reader = asyncio.ensure_future(self._read())
        if self._stopped:
            reader.cancel()
        try:
            # the reader ends at EOF or a bad header; the settler ends early only when delivery failed; the acker
            # only when an ack cannot be sent (the peer is gone)
            await asyncio.wait({reader, settler, acker}, return_when=asyncio.FIRST_COMPLETED)
            # a peer done sending still waits for its acks; one that hung up cannot read them: its slot (and fd)
            # are freed now, and what it sent settles in the pipeline all the same. Where the socket cannot
            # tell a hang-up from a half-close (vsock), the acker's next heartbeat failing tells it
            if not settler.done() and not self.stream.hung_up():
                await asyncio.wait({settler, acker}, timeout=self.rx.drain_timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
            if settler.done() and not settler.cancelled() and settler.exception() is None and self.dirty.is_set():
                with contextlib.suppress(TimeoutError, TransportError):
                    async with asyncio.timeout(1.0):
                        await self._send_ack()
        finally:
            for t in (reader, settler, acker):
                t.cancel()
            await asyncio.gather(reader, settler, acker, return_exceptions=True)

    async def _read(self) -> None:
        opts = self.rx.options
        dec = LengthPrefixedDecoder(opts.max_frame)
        clock = asyncio.get_running_loop().time
        #: when the frame the decoder holds part of was begun: it must be complete within idle_timeout (a peer
        #: sending it a byte at a time would otherwise hold its connection, and a slot, for good)
        begun: float | None = None
        try:
            while True:
                before = clock()
                if not await self._room_for_more():
                    return
                if begun is not None:  # the time the connection was not read does not count against the peer
                    begun += clock() - before
                try:
                    due = clock() + opts.idle_timeout
                    async with asyncio.timeout_at(due if begun is None else min(due, begun + opts.idle_timeout)):
                        chunk = await self.stream.receive()
                except TimeoutError:
                    if begun is not None and clock() >= begun + opts.idle_timeout:
                        self.rx.reject(self.peer, "idle", f"a frame begun was not complete within {opts.idle_timeout}s")
                        return
                    if self.inflight:
                        continue
                    self.rx.reject(self.peer, "idle", f"nothing received for {opts.idle_timeout}s")
                    return
                if not chunk:
                    return
                try:
                    dec.feed(chunk)
                    frames = dec.frames()
                    if not dec.buffered:
                        begun = None
                    elif begun is None or frames:  # a new frame begun (the one before it complete)
                        begun = clock()
                except FramingError as exc:
                    if not await self._take_within_limit(getattr(exc, "frames", [])):
                        return
                    # the bad header starts the next frame: refuse it, so a sender with a larger limit moves on
                    self._refused_now("frame", str(exc))
                    return
                if not await self._take_within_limit(frames):
                    return
        finally:
            self.reading = False
            self.more.set()

    async def _room_for_more(self) -> bool:
        """Wait until fewer than ``max_inflight`` frames are unsettled here, and fewer than the listener's
        ``max_unsettled`` in all, and the refusals not yet sent are few; False when the peer does not read its
        acks for ``idle_timeout``, or hung up (the connection is then closed)."""
        opts = self.rx.options
        rx = self.rx
        while (self.received - self.settled >= rx.max_inflight or len(self.rejected) >= MAX_UNSENT_REFUSALS
               or rx.saturated):
            if len(self.rejected) < MAX_UNSENT_REFUSALS:
                # the pipeline makes room, however long a sink is down; meanwhile the peer may hang up, which
                # is looked for every HANGUP_POLL seconds (the socket is not read, so nothing else tells)
                room = self.room if self.received - self.settled >= rx.max_inflight else rx.unsettled_room
                room.clear()
                self.waiting = True
                try:
                    async with asyncio.timeout(min(rx.heartbeat, HANGUP_POLL)):
                        await room.wait()
                except TimeoutError:
                    if self.stream.hung_up():
                        return False
                finally:
                    self.waiting = False
                continue
            self.room.clear()
            try:  # only the peer can make room here, by reading its acks: bound the wait like silence
                async with asyncio.timeout(opts.idle_timeout):
                    await self.room.wait()
            except TimeoutError:
                self.rx.reject(self.peer, "idle", f"acks not read for {opts.idle_timeout}s")
                return False
        return True

    async def _take_within_limit(self, frames: list[bytes]) -> bool:
        """Hand ``frames`` (one read's) on, no more at a time than ``max_inflight`` and the listener's
        ``max_unsettled_bytes`` leave room for (one frame at least)."""
        start, end = 0, len(frames)
        while start < end:
            if not await self._room_for_more():
                return False
            room = self.rx.max_inflight - (self.received - self.settled)
            stop = self.rx.fitting(frames, start, min(end, start + room))
            if start == 0 and stop == end:
                self._take(frames)  # the common case: all of it at once, no copy
                return True
            self._take(frames[start:stop])
            start = stop
        return True

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

    def _take(self, frames: list[bytes]) -> None:
        """Check each frame, drop copies, hand the new events on (all at once when ``deliver`` can take
        a batch), and queue every frame's fate in frame order."""
        if not frames:
            return
        rx = self.rx
        many = self.many
        fates, events, raw, keys = sort_frames(rx, self.channel, self.peer, frames, batch=many is not None,
                                               taken=self._taken)
        batch: asyncio.Future[Any] | None = None
        if events:
            assert many is not None
            try:
                if self.told:
                    box: list[asyncio.Future[Any]] = []
                    if self.progressing:
                        batch = many(events, self.peer, raw, functools.partial(self._told, box),
                                     functools.partial(self._progressed, box))
                    else:
                        batch = many(events, self.peer, raw, functools.partial(self._told, box))
                    box.append(batch)
                    self._runs[batch] = []
                    batch.add_done_callback(self._forget_runs)
                else:
                    batch = many(events, self.peer, raw)
            except Exception as exc:
                batch = asyncio.get_running_loop().create_future()
                batch.set_exception(exc)
            rx.hold(batch, len(events), sum(map(len, raw)))
            rx.dedupe.add_many(keys, batch)
            batch.add_done_callback(functools.partial(self._taken, len(events)))
        inflight = self.inflight
        run_start = run_len = 0
        for fate in fates:
            if type(fate) is int:
                if run_len and fate == run_start + run_len:
                    run_len += 1
                    continue
                if run_len:
                    self._queue(batch, run_start, run_len)
                run_start, run_len = fate, 1
                continue
            if run_len:
                self._queue(batch, run_start, run_len)
                run_len = 0
            if len(fate) == 2:
                self._refused_now(*fate)
            else:
                fut, pos, _n = fate
                if fut is None:
                    self.received += 1
                    inflight.append((None, 0, 1))
                else:
                    self._queue(fut, pos, 1)
        if run_len:
            self._queue(batch, run_start, run_len)
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
