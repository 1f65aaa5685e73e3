"""One guest connection of a :class:`~.server.Receiver`: frames in, events handed on, acks out.

Three tasks share the connection: the reader (here) deframes and checks what
arrives and hands the new events of each read on (all at once when ``deliver``
takes batches); the settler waits for each run of frames' fate in frame order;
the acker sends cumulative acks (and refusals, early) as frames settle,
repeating the last one as a heartbeat while frames wait on the pipeline. What
becomes of each frame, the settler and the acker are :class:`~.ledger.FrameLedger`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any

from ..codec.framing import LengthPrefixedDecoder
from ..errors import FramingError, TransportError
from ..transport import ByteStream
from .dedupe import channel_of
from .intake import sort_frames
from .ledger import FrameLedger

if TYPE_CHECKING:
    from .server import Receiver

__all__ = ["MAX_UNSENT_REFUSALS", "Connection"]

log = logging.getLogger("agent.receiver")

#: refusals waiting to be sent at which a connection stops being read (a guest that never reads its acks)
MAX_UNSENT_REFUSALS = 4096
#: seconds between looks at whether a peer whose connection is not being read has hung up
HANGUP_POLL = 0.25


class Connection(FrameLedger):
    def __init__(self, rx: Receiver, stream: ByteStream) -> None:
        super().__init__(rx, stream)
        self.channel = channel_of(stream.peer)
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
