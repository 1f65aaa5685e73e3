"""The receiver: accept guests, read frames, check them, hand them on, ack what is durable.

Per connection::

    bytes -> size guard + deframe -> parse/validate -> signature policy -> dedupe -> deliver(event, peer)
                                                                                       |
    acks  <- cumulative count of settled frames, in order  <-  awaitable resolves  <---+

``deliver`` is the pipeline's: it takes the checked guest event and the
``hostpeer`` string and returns an awaitable that completes once the event is
durably taken. It is called in frame order. If the awaitable raises
:class:`~.validate.Rejected`, the frame is refused with that reason; if it
returns ``False`` (an overflow policy dropped the event), it is refused with
reason ``dropped``. Up to ``max_inflight`` frames per connection may await it
at once; beyond that the connection is not read.

A ``deliver`` with a ``many(events, hostpeer, frames)`` method is handed all
new events of one read at once (with their frames as received) and returns
one future for them: its result is None when all were taken, or a list with
each event's answer in order (True, False for dropped, or the exception that
refused it). One future and one callback per read instead of per event is
what lets a receiver keep up with the signatures.

Acks count settled frames in order; refusals are reported once each, as soon
as they are known, even ahead of that count (``docs/protocol.md``). A refused
event does not end the connection. A bad frame header closes only its
connection, after acking what came before it and refusing the frame it starts
(so a sender with a larger limit does not send that event again). If
``deliver`` fails, the connection is closed without acking what is unsettled,
so the sender sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..codec.framing import LengthPrefixedDecoder, encode_frame
from ..config import ListenerOptions
from ..errors import FramingError, TransportError
from ..transport import Ack, ByteStream, Listener, encode_ack, listen
from ..transport.ack import MAX_REJECTED
from .dedupe import DedupeWindow, Key, channel_of
from .policy import GuestPolicy
from .telemetry import ReceiverStats, RejectLog
from .validate import Rejected, parse_event

__all__ = ["HEARTBEAT", "Deliver", "Receiver"]

log = logging.getLogger("agent.receiver")

#: the pipeline's entry: (guest event, hostpeer) -> awaitable done when the event is durable
Deliver = Callable[[dict[str, Any], str], Awaitable[Any]]

#: seconds between repeated acks while frames wait on the pipeline (below any sender's ack_timeout)
HEARTBEAT = 10.0
#: refusals waiting to be sent at which a connection stops being read (a guest that never reads its acks)
MAX_UNSENT_REFUSALS = 4096


class Receiver:
    """One listener and its connections."""

    def __init__(self, options: ListenerOptions, deliver: Deliver, *, policy: GuestPolicy | None = None,
                 listener: Listener | None = None, dedupe: DedupeWindow | None = None,
                 max_inflight: int | None = None, drain_timeout: float = 10.0,
                 stats: ReceiverStats | None = None, heartbeat: float = HEARTBEAT) -> None:
        self.options = options
        self.deliver = deliver
        self.policy = policy or GuestPolicy("off")
        self.dedupe = dedupe if dedupe is not None else DedupeWindow(options.dedupe_window)
        self.max_inflight = max(1, max_inflight if max_inflight is not None else options.max_inflight)
        self.drain_timeout = drain_timeout
        self.heartbeat = heartbeat
        #: counters; pass one in to read them from outside (metrics)
        self.stats = stats if stats is not None else ReceiverStats()
        self.reject = RejectLog(self.stats, listener=options.uri)
        self._listener = listener
        self._conns: set[asyncio.Task[None]] = set()

    @classmethod
    def build(cls, options: ListenerOptions, deliver: Deliver, **kw: Any) -> Receiver:
        """Load the trust store and bind the listener (errors: ConfigError, SigningError, TransportError)."""
        policy = GuestPolicy.load(options.guest_signatures, options.trusted_keys)
        listener = listen(options.uri, name=options.name, mode=options.mode)
        return cls(options, deliver, policy=policy, listener=listener, **kw)

    @property
    def address(self) -> str:
        return self._listener.address if self._listener is not None else self.options.uri

    async def serve(self) -> None:
        """Accept until cancelled; then close the listener and every connection."""
        if self._listener is None:
            self._listener = listen(self.options.uri, name=self.options.name, mode=self.options.mode)
        listener = self._listener
        try:
            while True:
                try:
                    stream = await listener.accept()
                except TransportError as exc:  # EMFILE and friends: wait, do not spin
                    log.warning("%s", exc)
                    await asyncio.sleep(0.5)
                    continue
                if len(self._conns) >= self.options.max_connections:
                    self.reject(stream.peer, "connections", f"limit of {self.options.max_connections} reached")
                    await stream.aclose()
                    continue
                self.stats.connections += 1
                task = asyncio.get_running_loop().create_task(self._handle(stream))
                self._conns.add(task)
                task.add_done_callback(self._conns.discard)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        # the address first, before anything that waits: under a cancelled task group every later await is
        # interrupted again, and a listener left open would keep the address from the next generation
        if self._listener is not None:
            await self._listener.aclose()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _handle(self, stream: ByteStream) -> None:
        self.stats.connections_open += 1
        try:
            await _Connection(self, stream).run()
        except Exception:  # a bug must not end the accept loop or other connections
            log.exception("%s: connection from %s failed", self.address, stream.peer)
        finally:
            self.stats.connections_open -= 1
            await stream.aclose()


class _Delivery(TransportError):
    """Delivery of a frame failed (not a refusal): the connection ends without acking it."""


_NEW: Any = object()

#: frames in flight, in frame order: the future deciding them (None: settled or refused already), the position
#: of the first one's answer in its result (-1: the result answers for each alike), and how many frames
_Entry = tuple["asyncio.Future[Any] | None", int, int]


class _Connection:
    def __init__(self, rx: Receiver, stream: ByteStream) -> None:
        self.rx = rx
        self.stream = stream
        self.peer = stream.peer
        self.channel = channel_of(stream.peer)
        self.many: Callable[[list[dict[str, Any]], str, list[bytes]], asyncio.Future[Any]] | None = getattr(
            rx.deliver, "many", None)
        self.inflight: deque[_Entry] = deque()
        self.received = 0
        self.settled = 0
        #: refusals not yet sent, and the frames among the unsettled ones already reported
        self.rejected: list[tuple[int, str]] = []
        self.reported: set[int] = set()
        self.more = asyncio.Event()
        self.room = asyncio.Event()
        self.dirty = asyncio.Event()
        self.reading = True

    async def run(self) -> None:
        settler = asyncio.ensure_future(self._settle())
        acker = asyncio.ensure_future(self._ack())
        reader = asyncio.ensure_future(self._read())
        try:
            # the reader ends at EOF or a bad header; the settler ends early only when delivery failed
            await asyncio.wait({reader, settler}, return_when=asyncio.FIRST_COMPLETED)
            if not settler.done():
                await asyncio.wait({settler}, timeout=self.rx.drain_timeout)
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
        try:
            while True:
                while self.received - self.settled >= self.rx.max_inflight or len(self.rejected) >= MAX_UNSENT_REFUSALS:
                    self.room.clear()
                    if len(self.rejected) < MAX_UNSENT_REFUSALS:
                        await self.room.wait()
                        continue
                    try:  # only the peer can make room here, by reading its acks: bound the wait like silence
                        async with asyncio.timeout(opts.idle_timeout):
                            await self.room.wait()
                    except TimeoutError:
                        self.rx.reject(self.peer, "idle", f"acks not read for {opts.idle_timeout}s")
                        return
                try:
                    async with asyncio.timeout(opts.idle_timeout):
                        chunk = await self.stream.receive()
                except TimeoutError:
                    if self.inflight:
                        continue
                    self.rx.reject(self.peer, "idle", f"nothing received for {opts.idle_timeout}s")
                    return
                if not chunk:
                    return
                try:
                    dec.feed(chunk)
                    frames = dec.frames()
                except FramingError as exc:
                    self._take(getattr(exc, "frames", []))
                    # the bad header starts the next frame: refuse it, so a sender with a larger limit moves on
                    self._refused_now("frame", str(exc))
                    return
                self._take(frames)
        finally:
            self.reading = False
            self.more.set()

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
        depth = rx.options.max_depth
        dedupe = rx.dedupe
        seen = dedupe.entries
        check = rx.policy.check if rx.policy.mode != "off" else None
        channel = self.channel
        many = self.many
        # per frame, in order: a refusal (reason, detail), a copy's entry, or the position in this batch
        fates: list[Any] = []
        events: list[dict[str, Any]] = []
        raw: list[bytes] = []
        keys: list[Key] = []
        here: dict[Key, int] = {}
        for frame in frames:
            try:
                event = parse_event(frame, max_depth=depth)
                if check is not None:
                    check(event)
            except Rejected as r:
                fates.append((r.reason, r.detail))
                continue
            key = (channel, event["source"], event["id"])
            first = seen.get(key, _NEW)
            if first is not _NEW:
                try:
                    first = dedupe.resolve(key, first)  # the first copy: settled (None) or pending
                except KeyError:  # the first copy was refused, dropped or failed: this one is new
                    first = _NEW
            if first is not _NEW:
                rx.stats.duplicates += 1
                fates.append((None, 0, 1) if first is None else (first[0], first[1], 1))
            elif key in here:  # a copy of an event earlier in this very read
                rx.stats.duplicates += 1
                fates.append(here[key])
            elif many is None:
                fut = _call(rx.deliver, event, self.peer)
                dedupe.add(key, fut)
                rx.stats.accepted += 1
                fates.append((fut, -1, 1))
            else:
                here[key] = len(events)
                fates.append(len(events))
                events.append(event)
                raw.append(frame)
                keys.append(key)
        batch: asyncio.Future[Any] | None = None
        if events:
            assert many is not None
            try:
                batch = many(events, self.peer, raw)
            except Exception as exc:
                batch = asyncio.get_running_loop().create_future()
                batch.set_exception(exc)
            dedupe.add_many(keys, batch)
            rx.stats.accepted += len(events)
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

    def _queue(self, fut: asyncio.Future[Any] | None, pos: int, count: int) -> None:
        """``count`` frames whose fate ``fut`` decides, from ``pos`` in its answer."""
        assert fut is not None
        first = self.received + 1
        self.received += count
        self.inflight.append((fut, pos, count))
        # a refusal (a drop) may come while earlier frames are pending: report it early
        if fut.done():
            self._early(first, pos, count, fut)
        else:
            fut.add_done_callback(functools.partial(self._early, first, pos, count))

    def _early(self, first: int, pos: int, count: int, fut: asyncio.Future[Any]) -> None:
        if first + count - 1 <= self.settled or _all_taken(fut):
            return
        for k in range(count):
            if first + k > self.settled and (refusal := _refusal(fut, pos + k if pos >= 0 else -1)) is not None:
                self._refuse(first + k, *refusal)

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
                if not fut.done():
                    await asyncio.wait((fut,))
                if fut.cancelled() or not (fut.exception() is None or isinstance(fut.exception(), Rejected)):
                    failure = "cancelled" if fut.cancelled() else str(fut.exception())
                    self.rx.reject(self.peer, "pipeline", f"delivery failed: {failure}")
                    raise _Delivery(failure)
                if not _all_taken(fut):
                    for k in range(count):
                        if (refusal := _refusal(fut, pos + k if pos >= 0 else -1)) is not None:
                            self._refuse(first + k, *refusal)
            inflight.popleft()
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
        count = self.settled
        frames = [encode_frame(encode_ack(Ack(count, tuple(rejected[i : i + MAX_REJECTED]))))
                  for i in range(0, len(rejected), MAX_REJECTED)] or [encode_frame(encode_ack(Ack(count)))]
        await self.stream.send(b"".join(frames))

    async def _ack(self) -> None:
        """Send acks as frames settle; while frames wait on the pipeline, repeat the last one as a heartbeat."""
        heartbeat = self.rx.heartbeat
        with contextlib.suppress(TransportError):
            while True:
                try:
                    async with asyncio.timeout(heartbeat):
                        await self.dirty.wait()
                except TimeoutError:
                    if not self.inflight:
                        continue
                await self._send_ack()


def _call(deliver: Deliver, event: dict[str, Any], peer: str) -> asyncio.Future[Any]:
    try:
        return asyncio.ensure_future(deliver(event, peer))
    except Exception as exc:
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(exc)
        return fut


def _all_taken(fut: asyncio.Future[Any]) -> bool:
    """A settled future whose answer takes every frame it decides (the common case, checked first)."""
    if fut.cancelled() or fut.exception() is not None:
        return False
    res = fut.result()
    return res is None or res is True


def _refusal(fut: asyncio.Future[Any], pos: int = -1) -> tuple[str, str] | None:
    """``(reason, detail)`` when a settled delivery refused or dropped the frame; None when taken or failed.

    ``pos`` is the frame's place in a batch's answer (a list), -1 when the answer is the frame's alone.
    """
    if fut.cancelled():
        return None
    exc = fut.exception()
    if isinstance(exc, Rejected):
        return exc.reason, exc.detail
    if exc is not None:
        return None
    res = fut.result()
    if pos >= 0 and type(res) is list:
        res = res[pos]
    if isinstance(res, Rejected):
        return res.reason, res.detail
    if isinstance(res, Exception):
        return "attributes", str(res)
    if res is False:
        return "dropped", "the host's queue overflow policy dropped it"
    return None
