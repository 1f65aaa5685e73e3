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

A listener takes at most ``max_connections`` connections, and at most
``max_connections_per_peer`` of one peer (:meth:`Receiver.peer_of`): one
peer opening connections cannot lock the others out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import ListenerOptions
from ..errors import TransportError
from ..transport import ByteStream, Listener, listen
from .connection import Connection
from .dedupe import DedupeWindow, channel_of
from .policy import GuestPolicy
from .telemetry import ReceiverStats, RejectLog

__all__ = ["HEARTBEAT", "Deliver", "Receiver"]

log = logging.getLogger("agent.receiver")

#: the pipeline's entry: (guest event, hostpeer) -> awaitable done when the event is durable
Deliver = Callable[[dict[str, Any], str], Awaitable[Any]]

#: seconds between repeated acks while frames wait on the pipeline (below any sender's ack_timeout)
HEARTBEAT = 10.0


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
        #: connections open per peer (see :meth:`peer_of`); a peer is here only while it has one open
        self._per_peer: dict[str, int] = {}
        self._connections: set[Connection] = set()
        #: shutting down: no connection is taken, nothing more is read (see :meth:`finish`)
        self._finishing = False
        #: the accept under way in :meth:`serve`
        self._accepting: asyncio.Future[ByteStream] | None = None
        #: frames handed on and not settled yet, of all connections, those that have ended included (a guest
        #: that hangs up leaves its frames to settle): at ``max_unsettled`` no connection is read further
        self.unsettled = 0
        self.max_unsettled = self.options.max_connections * self.max_inflight
        #: and their bytes, at most ``max_unsettled_bytes`` (frames may be up to ``max_frame`` each)
        self.unsettled_bytes = 0
        self.unsettled_room = asyncio.Event()

    @property
    def saturated(self) -> bool:
        """The listener holds as many unsettled frames, or bytes of them, as it may: no connection is read."""
        return self.unsettled >= self.max_unsettled or self.unsettled_bytes >= self.options.max_unsettled_bytes

    def fitting(self, frames: list[bytes], start: int, stop: int) -> int:
        """Where the run of ``frames`` from ``start`` (up to ``stop``) that ``max_unsettled_bytes`` leaves room
        for ends: one frame at least."""
        space = self.options.max_unsettled_bytes - self.unsettled_bytes
        if (stop - start) * self.options.max_frame <= space:  # the common case: no need to add them up
            return stop
        size = len(frames[start])
        for i in range(start + 1, stop):
            size += len(frames[i])
            if size > space:
                return i
        return stop

    def hold(self, fut: asyncio.Future[Any], frames: int, size: int) -> None:
        """``frames`` of ``size`` bytes handed on, unsettled until ``fut`` is done."""
        self.unsettled += frames
        self.unsettled_bytes += size
        fut.add_done_callback(functools.partial(self._settled, frames, size))

    def _settled(self, frames: int, size: int, _fut: asyncio.Future[Any]) -> None:
        self.unsettled -= frames
        self.unsettled_bytes -= size
        if not self.saturated:
            self.unsettled_room.set()

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
                accepting = self._accepting = asyncio.ensure_future(listener.accept())
                try:
                    stream = await accepting
                except TransportError as exc:  # EMFILE and friends: wait, do not spin
                    log.warning("%s", exc)
                    await asyncio.sleep(0.5)
                    continue
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if not (accepting.cancelled() and self._finishing) or (task is not None and task.cancelling()):
                        raise
                    # shutting down (finish): the address goes now, so a new guest is refused at once and sends
                    # to the next start, rather than waiting on a connection nobody reads
                    await listener.aclose()
                    await asyncio.Event().wait()  # until cancelled
                finally:
                    self._accepting = None
                if self._finishing:  # shutting down: a new guest sends to the next start
                    await stream.aclose()
                    continue
                if len(self._conns) >= self.options.max_connections:
                    self.reject(stream.peer, "connections", f"limit of {self.options.max_connections} reached")
                    await stream.aclose()
                    continue
                peer = self.peer_of(stream.peer)
                if peer is not None:
                    if self._per_peer.get(peer, 0) >= self.options.peer_connections:
                        self.reject(stream.peer, "peer_connections",
                                    f"limit of {self.options.peer_connections} connections of {peer} reached")
                        await stream.aclose()
                        continue
                    self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
                self.stats.connections += 1
                task = asyncio.get_running_loop().create_task(self._handle(stream))
                self._conns.add(task)
                task.add_done_callback(self._conns.discard)
                if peer is not None:
                    task.add_done_callback(functools.partial(self._peer_gone, peer))
        finally:
            await self.aclose()

    def peer_of(self, hostpeer: str) -> str | None:
        """Whose share of ``max_connections_per_peer`` a connection from ``hostpeer`` takes: a unix peer's uid
        (not its pid: a process can fork), a vsock peer's CID. None on a Firecracker socket, where every
        connection comes from its one VM and ``max_connections`` alone bounds them."""
        if self.options.uri.startswith("fcvsock:"):
            return None
        return channel_of(hostpeer)

    def connections_of(self, hostpeer: str) -> int:
        """Connections open now that count against the share of ``hostpeer``'s peer (:meth:`peer_of`)."""
        peer = self.peer_of(hostpeer)
        return len(self._conns) if peer is None else self._per_peer.get(peer, 0)

    def _peer_gone(self, peer: str, _task: asyncio.Task[None]) -> None:
        left = self._per_peer[peer] - 1
        if left:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]

    async def finish(self, timeout: float) -> None:
        """Stop taking: the listener closes (a new guest is refused), no connection is read further. What the
        connections took settles and is acknowledged (each connection then ends, as at its guest's end of
        input), for up to ``timeout`` seconds; what is left then is cancelled by :meth:`aclose`,
        unacknowledged, and sent again."""
        self._finishing = True
        if self._accepting is not None:
            self._accepting.cancel()  # serve() closes the listener
        for c in list(self._connections):
            c.stop_reading()
        if self._conns:
            await asyncio.wait(set(self._conns), timeout=timeout)

    async def aclose(self) -> None:
        # the address first, before anything that waits: under a cancelled task group every later await is
        # interrupted again, and a listener left open would keep the address from the next generation
        if self._listener is not None:
            await self._listener.aclose()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        self.reject.flush()  # refusals the log's rate held back are said before the listener goes

    async def _handle(self, stream: ByteStream) -> None:
        self.stats.connections_open += 1
        conn = Connection(self, stream)
        self._connections.add(conn)
        try:
            if self._finishing:
                conn.stop_reading()
            await conn.run()
        except Exception:  # a bug must not end the accept loop or other connections
            log.exception("%s: connection from %s failed", self.address, stream.peer)
        finally:
            self._connections.discard(conn)
            self.stats.connections_open -= 1
            await stream.aclose()
