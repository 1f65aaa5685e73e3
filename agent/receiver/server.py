"""The receiver: accept guests, read frames, check them, hand them on, ack what is durable.

Per connection::

    bytes -> size guard + deframe -> parse/validate -> signature policy -> dedupe -> deliver(event, peer)
                                                                                       |
    acks  <- cumulative count of settled frames, in order  <-  awaitable resolves  <---+

``deliver`` is the pipeline's: it takes the checked guest event and the
``hostpeer`` string and returns an awaitable that completes once the event is
durably taken. It is called in frame order. If the awaitable raises
:class:`~.validate.Rejected`, the frame is acked as refused with that reason;
if it returns ``False`` (an overflow policy dropped the event), it is acked as
refused with reason ``dropped``. Up to ``max_inflight`` frames per
connection may await it at once; beyond that the connection is not read.

A bad frame header closes only its connection, after acking what came before
it and acking the frame it starts as refused (an upstream that sent an oversized
event will not send it again). A refused event is acked as refused and the connection goes on, so the
sender does not send it again. If ``deliver`` fails, the connection is closed
without acking what is unsettled, so the sender sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..codec.framing import LengthPrefixedDecoder, encode_frame
from ..config import ListenerOptions
from ..errors import FramingError, TransportError
from ..transport import Ack, ByteStream, Listener, encode_ack, listen
from ..transport.ack import MAX_REJECTED
from .dedupe import DedupeWindow
from .policy import GuestPolicy
from .telemetry import ReceiverStats, RejectLog
from .validate import Rejected, parse_event

__all__ = ["HEARTBEAT", "Deliver", "Receiver"]

log = logging.getLogger("agent.receiver")

#: the pipeline's entry: (guest event, hostpeer) -> awaitable done when the event is durable
Deliver = Callable[[dict[str, Any], str], Awaitable[Any]]

#: seconds between repeated acks while frames wait on the pipeline (below any sender's ack_timeout)
HEARTBEAT = 10.0

#: an inflight entry: settled (None), refused (the reason text) or a pending delivery
_Entry = asyncio.Future[Any] | str | None


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
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._listener is not None:
            await self._listener.aclose()

    async def _handle(self, stream: ByteStream) -> None:
        self.stats.connections_open += 1
        try:
            await _Connection(self, stream).run()
        except Exception:  # a bug must not end the accept loop or other connections
            log.exception("%s: connection from %s failed", self.address, stream.peer)
        finally:
            self.stats.connections_open -= 1
            await stream.aclose()


class _Connection:
    def __init__(self, rx: Receiver, stream: ByteStream) -> None:
        self.rx = rx
        self.stream = stream
        self.peer = stream.peer
        self.inflight: deque[_Entry] = deque()
        self.settled = 0
        self.rejected: list[tuple[int, str]] = []
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
                while len(self.inflight) >= self.rx.max_inflight:
                    self.room.clear()
                    await self.room.wait()
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
                    self.rx.reject(self.peer, "frame", str(exc))
                    # the bad header starts the next frame: ack it as refused so the sender does not send it again
                    self.inflight.append(f"frame: {exc}")
                    return
                self._take(frames)
        finally:
            self.reading = False
            self.more.set()

    def _take(self, frames: list[bytes]) -> None:
        rx = self.rx
        depth = rx.options.max_depth
        dedupe = rx.dedupe
        for frame in frames:
            try:
                event = parse_event(frame, max_depth=depth)
                rx.policy.check(event)
            except Rejected as r:
                rx.reject(self.peer, r.reason, r.detail)
                self.inflight.append(f"{r.reason}: {r.detail}")
                continue
            key = (event["source"], event["id"])
            if key in dedupe:
                rx.stats.duplicates += 1
                self.inflight.append(dedupe.get(key))
                continue
            fut: asyncio.Future[Any]
            try:
                fut = asyncio.ensure_future(rx.deliver(event, self.peer))
            except Exception as exc:
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(exc)
            dedupe.add(key, fut)
            rx.stats.accepted += 1
            self.inflight.append(fut)
        if frames:
            self.more.set()

    async def _settle(self) -> None:
        inflight = self.inflight
        while True:
            if not inflight:
                if not self.reading:
                    return
                self.more.clear()
                await self.more.wait()
                continue
            entry = inflight[0]
            if isinstance(entry, asyncio.Future):
                entry = await self._outcome(entry)
            inflight.popleft()
            self.settled += 1
            if isinstance(entry, str) and len(self.rejected) < MAX_REJECTED:
                self.rejected.append((self.settled, entry))
            self.dirty.set()
            self.room.set()

    async def _outcome(self, fut: asyncio.Future[Any]) -> str | None:
        """None once delivered; a reason when the pipeline refused or dropped the event; raises otherwise."""
        try:
            result = await fut
        except Rejected as r:
            self.rx.reject(self.peer, r.reason, r.detail)
            return f"{r.reason}: {r.detail}"
        except Exception as exc:
            self.rx.reject(self.peer, "pipeline", f"delivery failed: {exc}")
            raise
        if result is False:
            self.rx.stats.dropped += 1
            return "dropped: the host's queue overflow policy dropped it"
        return None

    async def _send_ack(self) -> None:
        self.dirty.clear()
        ack = Ack(self.settled, tuple(self.rejected))
        self.rejected = []
        await self.stream.send(encode_frame(encode_ack(ack)))

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
