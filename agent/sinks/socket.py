"""``unix:PATH``, ``vsock:CID:PORT``, ``fcvsock:UDS_PATH:PORT`` — framed events to a stream socket, acked.

Each event's body goes out as one length-prefixed frame. ``send`` returns once
the batch is taken into the sender's window of unacknowledged events (waiting,
up to ``send_timeout``, while that window is full); ``flush`` returns once the
downstream has acknowledged everything sent (``docs/protocol.md``). After a
lost connection the sender reconnects with full-jitter exponential backoff and
sends every unacknowledged event again, in order, with the same id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..codec.framing import DEFAULT_MAX_FRAME
from ..errors import ConfigError, SinkError, TransportError
from ..model import Event
from ..transport import AckedSender, Backoff, dialer, parse_endpoint
from ..transport.sender import TOO_LARGE
from .base import Sink, SinkContext
from .registry import register

__all__ = ["FcVsockSink", "SocketOptions", "SocketSink", "UnixSink", "VsockSink"]

log = logging.getLogger("agent.sinks.socket")


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """Scheme-specific ``[[sinks]]`` keys of the socket sinks."""

    #: events sent and not yet acknowledged, at most
    max_unacked: int = 10000
    #: seconds ``send`` waits for room in that window before it fails
    send_timeout: float = 30.0
    #: seconds without ack progress (with events outstanding) before the connection is dropped
    ack_timeout: float = 30.0
    connect_timeout: float = 5.0
    #: first and largest reconnect delay ceiling, seconds (full jitter below the ceiling)
    backoff_initial: float = 0.1
    backoff_max: float = 30.0
    max_frame: int = DEFAULT_MAX_FRAME

    def __post_init__(self) -> None:
        if self.max_unacked < 1:
            raise ValueError("max_unacked must be at least 1")
        for name in ("send_timeout", "ack_timeout", "connect_timeout", "backoff_initial"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be less than backoff_initial")
        if not 1 <= self.max_frame <= 0xFFFFFFFF:
            raise ValueError("max_frame must be between 1 and 4294967295")


def _body(e: Event) -> bytes:
    return e.body


class SocketSink(Sink):
    """The common implementation; subclasses only name the scheme."""

    Options = SocketOptions

    def __init__(self, target: str, options: Any, ctx: SinkContext) -> None:
        super().__init__(target, options if options is not None else SocketOptions(), ctx)
        opts: SocketOptions = self.options
        try:
            self.endpoint = parse_endpoint(self.uri)
        except ConfigError as exc:
            raise SinkError(exc.reason) from None
        self.refused = 0
        #: the batch being handed over part by part, and how many of it the sender took
        self._partial: Sequence[Event] | None = None
        self._taken = 0
        #: refused events not yet taken by :meth:`take_dropped`, with the downstream's reason
        self._refused: list[tuple[Event, str]] = []
        #: called with the events each ack settles, and the refused ones with reasons (e.g. to trim a spool)
        self.on_settled: Callable[[list[Event], list[tuple[Event, str]]], None] | None = None
        self.sender: AckedSender[Event] = AckedSender(
            dialer(self.endpoint, timeout=opts.connect_timeout), _body, name=self.uri,
            max_unacked=opts.max_unacked, max_frame=opts.max_frame, ack_timeout=opts.ack_timeout,
            backoff=Backoff(opts.backoff_initial, opts.backoff_max), on_settled=self._settled,
            on_trouble=self.trouble)

    def _settled(self, done: list[Event], refused: list[tuple[Event, str]]) -> None:
        # the downstream refused these for good (invalid, bad signature, dropped): sending again cannot help
        self.refused += len(refused)
        for e, reason in refused[:1]:
            log.debug("%s: event %s refused: %s", self.label, e.id, reason)
        self._refused.extend(refused)
        if self.on_settled is not None:
            self.on_settled(done, refused)
        if refused and self.on_left_out is not None:
            self.on_left_out()  # counted and told now: what the downstream holds may keep the flush waiting

    def relabelled(self) -> None:
        self.sender.name = self.label  # the sender's log lines and errors name the sink as the rest do

    async def open(self) -> None:
        self.sender.start()

    async def send(self, batch: Sequence[Event]) -> None:
        """Hand ``batch`` to the sender as the window (``max_unacked``) makes room, part by part; the worker
        retrying the same batch after a timeout goes on after the parts already taken."""
        if self._partial is not batch:
            self._partial, self._taken = batch, 0
        try:
            await self.sender.put_as_room_allows(batch[self._taken :], self.options.send_timeout, self._took)
        except TransportError as exc:
            raise SinkError(self._own(exc)) from None
        self._partial = None

    def _own(self, exc: TransportError) -> str:
        """The sender's error without the sink's name it starts with: the worker's log line names the sink."""
        return str(exc).removeprefix(f"{self.sender.name}: ")

    def _took(self, n: int) -> None:
        self._taken += n

    @property
    def partly_taken(self) -> int:
        """How many of the batch being sent (a send not finished) the sender took: counted in :attr:`unacked`,
        not yet sent for the worker."""
        return self._taken if self._partial is not None else 0

    async def flush(self) -> None:
        try:
            await self.sender.drain(timeout=self.options.ack_timeout)
        except TransportError as exc:
            raise SinkError(self._own(exc)) from None

    async def aclose(self) -> None:
        try:
            await self.flush()
        finally:
            await self.sender.aclose()

    def abort(self) -> None:
        """Stop the sender now, without waiting (a close that was cut short)."""
        self.sender.abort()

    def take_unsent(self) -> list[Event]:
        """Stop, and hand over what the downstream has not acknowledged (a reload's successor sends it)."""
        return self.sender.take_unsettled()

    def take_dropped(self) -> list[tuple[Event, str]]:
        """The events the downstream refused, as ``refused: <its reason>``, and those no frame can carry, as
        ``too_large``: the worker counts them as dropped by that reason and tells a guest that sent one why."""
        out, self._refused = self._refused, []
        return [(e, TOO_LARGE if reason.startswith(f"{TOO_LARGE}:") else f"refused: {reason}") for e, reason in out]

    @property
    def unacked(self) -> int:
        return self.sender.pending


@register
class UnixSink(SocketSink):
    scheme = "unix"


@register
class VsockSink(SocketSink):
    scheme = "vsock"


@register
class FcVsockSink(SocketSink):
    scheme = "fcvsock"
