"""``nats://HOST:PORT/SUBJECT`` — signed events into NATS JetStream, each acknowledged by the stream.

Every event is published with ``Nats-Msg-Id`` set to its id, so a copy sent
again (after a lost ack, a reconnect, a retried batch) is dropped by the
server's duplicate window. ``send`` returns only when JetStream has
acknowledged (stored) every event of the batch, with at most ``max_inflight``
publishes awaiting their ack at once; any failure (no connection, an ack
timeout, an API error) raises :class:`~agent.errors.SinkError`, and the
pipeline's worker retries the whole batch with backoff while the queue and
spool hold what comes meanwhile. So ``flush`` has nothing left to wait for.

The subject may be a template over event attributes: ``hoststamp.{hostid}.{type}``
(values become single subject-safe tokens, see :mod:`agent.codec.nats`).
``mode = "structured"`` (default) sends ``Event.body`` with
``Content-Type: application/cloudevents+json``; ``mode = "binary"`` sends the
data as payload and the attributes as ``ce-`` headers, per the CloudEvents
NATS binding. A lost connection is re-established on the next send, no sooner
than a full-jitter exponential backoff allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from ..codec.nats import CONTENT_TYPE, MSG_ID, STRUCTURED, SubjectTemplate, msg_id, source_msg_id, to_binary, wire_size
from ..errors import ConfigError, SinkError, TransportError
from ..model import Event
from ..transport.nats import (
    NatsCredentials,
    connect,
    creds_problem,
    describe,
    ensure_stream,
    load_creds,
    name_problem,
    nats_errors,
    parse_nats_uri,
)
from ..transport.sender import Backoff
from .base import Sink, SinkContext
from .registry import register

__all__ = ["NatsOptions", "NatsSink", "NatsSinkStats"]

log = logging.getLogger("agent.sinks.nats")

_CHEAP_FIELDS = frozenset(("id", "source", "type"))
_SEND_ERRORS = (TransportError, nats.errors.Error, OSError)
_CLOSE_ERRORS = (TimeoutError, nats.errors.Error, OSError)


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """Scheme-specific ``[[sinks]]`` keys of ``nats://``."""

    #: ``structured`` (the JSON event as payload) or ``binary`` (data as payload, ``ce-`` headers)
    mode: Literal["structured", "binary"] = "structured"
    #: ``Nats-Msg-Id``: the event ``id`` alone, or ``source`` and ``id`` (safe when guests reuse ids)
    msg_id: Literal["id", "source-id"] = "id"
    #: publishes awaiting their JetStream ack, at most
    max_inflight: int = 512
    #: seconds to wait for one ack before the batch is failed (and retried)
    ack_timeout: float = 5.0
    connect_timeout: float = 2.0
    #: reconnect delay ceilings, seconds: full jitter below ``min(backoff_max, backoff_initial * 2**n)``
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    #: create this stream (over the subject, placeholders as ``*``) when it does not exist
    create_stream: str | None = None
    storage: Literal["file", "memory"] = "file"
    #: seconds the server remembers message ids (the stream's duplicate window), for a created stream
    duplicate_window: float = 120.0
    #: a NATS credentials file (JWT + seed), if the server wants one; read when the sink is built (at the start
    #: and at each reload), never by a reconnect
    creds: str | None = None

    def __post_init__(self) -> None:
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        for name in ("ack_timeout", "connect_timeout", "backoff_initial", "duplicate_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be less than backoff_initial")
        if self.creds is not None and (problem := creds_problem(self.creds)) is not None:
            raise ValueError(f"creds: {problem}")
        if self.create_stream is not None and (problem := name_problem(self.create_stream, "stream")) is not None:
            raise ValueError(f"create_stream: {problem} (leave the key out to create no stream)")


@dataclass(slots=True)
class NatsSinkStats:
    published: int = 0
    #: acks that said "stored"
    stored: int = 0
    #: acks that said "duplicate": the server already had this message id
    duplicates: int = 0
    connects: int = 0
    #: connections that broke or were dropped after a failure (lost server, ack timeout, refusal)
    disconnects: int = 0
    #: events with no binary form, sent structured instead
    structured_fallbacks: int = 0


class _AckInbox:
    """One connection's reply subscription: a future per publish, resolved by the JetStream ack."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox() + "."
        self.waiting: dict[str, asyncio.Future[bool]] = {}
        self._n = 0

    async def start(self) -> None:
        await self.nc.subscribe(self.prefix + "*", cb=self._on_reply)

    def expect(self) -> tuple[str, asyncio.Future[bool]]:
        self._n += 1
        token = str(self._n)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiting[token] = fut
        return self.prefix + token, fut

    async def _on_reply(self, msg: Msg) -> None:
        fut = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if fut is None or fut.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(SinkError("no JetStream stream takes this subject"))
            return
        try:
            reply = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            fut.set_exception(SinkError(f"unreadable publish ack {msg.data[:80]!r}"))
            return
        error = reply.get("error") if isinstance(reply, dict) else None
        if error is not None or not isinstance(reply, dict):
            detail = error.get("description", error) if isinstance(error, dict) else reply
            fut.set_exception(SinkError(f"JetStream refused the message: {detail}"))
            return
        fut.set_result(bool(reply.get("duplicate", False)))

    def fail_all(self, reason: str) -> None:
        waiting, self.waiting = self.waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(SinkError(reason))
                fut.exception()  # retrieved: nobody may be awaiting it any more


@register
class NatsSink(Sink):
    scheme = "nats"
    Options = NatsOptions

    def __init__(self, target: str, options: Any, ctx: SinkContext) -> None:
        super().__init__(target, options if options is not None else NatsOptions(), ctx)
        self.opts: NatsOptions = self.options
        try:
            self.endpoint = parse_nats_uri(self.uri)
            self.template = SubjectTemplate.parse(self.endpoint.subject)
        except ConfigError as exc:
            raise SinkError(exc.reason) from None
        except ValueError as exc:
            raise SinkError(f"{self.uri}: {exc}") from None
        # read once, here (at the start, and by each reload, which builds its sinks anew): a connect hands the
        # client what was read, and the file is not opened again
        self._creds: NatsCredentials | None = None
        if self.opts.creds is not None:
            try:
                self._creds = load_creds(self.opts.creds)
            except ConfigError as exc:
                raise SinkError(f"creds: {exc.reason}") from None
        self._needs_body = not (self.template.static or set(self.template.fields) <= _CHEAP_FIELDS)
        self.stats = NatsSinkStats()
        #: events left out because the server's max_payload is smaller, not yet told to the worker
        self._left_out: list[tuple[Event, str]] = []
        #: ``stats.duplicates`` at the last :meth:`take_duplicates`
        self._duplicates_told = 0
        self._nc: Client | None = None
        self._inbox: _AckInbox | None = None
        self.backoff = Backoff(self.opts.backoff_initial, self.opts.backoff_max)
        self._retry_at = 0.0
        self._where = f"nats {self.endpoint.display}"
        #: an event over the server's max_payload was logged: the later ones are counted, not logged
        self._too_large_told = False

    # -- connection -------------------------------------------------------------------------------------------

    async def _ready(self) -> tuple[Client, _AckInbox]:
        nc, inbox = self._nc, self._inbox
        if nc is not None and inbox is not None and nc.is_connected:
            return nc, inbox
        await self._drop(failed=nc is not None)
        now = time.monotonic()
        if now < self._retry_at:
            raise SinkError(f"{self._where}: not connected (next attempt in {self._retry_at - now:.2f}s)")
        inboxes: list[_AckInbox] = []

        async def lost() -> None:
            for box in inboxes:
                box.fail_all(f"{self._where}: connection lost")

        nc = None
        try:
            nc = await connect(self.endpoint.server, timeout=self.opts.connect_timeout, creds=self._creds,
                               name="hoststamp-sink", on_disconnect=lost)
            inbox = _AckInbox(nc)
            inboxes.append(inbox)
            with nats_errors(self._where):
                await inbox.start()
            if self.opts.create_stream:
                await ensure_stream(nc.jetstream(), self.opts.create_stream, [self.template.wildcard()],
                                    storage=self.opts.storage, duplicate_window=self.opts.duplicate_window)
        except TransportError as exc:
            if nc is not None:
                await _close(nc)
            self._retry_at = time.monotonic() + self.backoff.next()
            raise SinkError(str(exc)) from exc
        self.backoff.reset()
        self.stats.connects += 1
        self._nc, self._inbox = nc, inbox
        log.info("%s: connected", self._where)
        return nc, inbox

    async def _drop(self, *, failed: bool = False) -> None:
        """Forget the connection; ``failed``: it broke (counted), rather than being closed on purpose."""
        nc, inbox = self._nc, self._inbox
        self._nc = self._inbox = None
        if failed and nc is not None:
            self.stats.disconnects += 1
        if inbox is not None:
            inbox.fail_all(f"{self._where}: connection closed")
        if nc is not None:
            await _close(nc)

    async def open(self) -> None:
        await self._ready()

    # -- publishing -------------------------------------------------------------------------------------------

    def _message(self, event: Event) -> tuple[str, dict[str, str], bytes]:
        """(subject, headers, payload) for one event."""
        attrs: Any = None
        if self._needs_body or self.opts.mode == "binary":
            attrs = orjson.loads(event.body)
        elif not self.template.static:
            attrs = {"id": event.id, "source": event.source, "type": event.type}
        subject = self.template.render(attrs) if attrs is not None else self.template.text
        ident = msg_id(event.id) if self.opts.msg_id == "id" else source_msg_id(event.source, event.id)
        if self.opts.mode == "binary":
            try:
                headers, payload = to_binary(attrs)
            except ValueError as exc:
                self.stats.structured_fallbacks += 1
                log.warning("%s: event %s has no binary form (%s); sent structured", self._where, event.id, exc)
            else:
                headers[MSG_ID] = ident
                return subject, headers, payload
        return subject, {CONTENT_TYPE: STRUCTURED, MSG_ID: ident}, event.body

    def take_duplicates(self) -> int:
        n, self._duplicates_told = self.stats.duplicates - self._duplicates_told, self.stats.duplicates
        return n

    def take_dropped(self) -> list[tuple[Event, str]]:
        out, self._left_out = self._left_out, []
        return out

    def _settle(self, fut: asyncio.Future[bool]) -> None:
        if fut.result():
            self.stats.duplicates += 1
        else:
            self.stats.stored += 1

    async def send(self, batch: Sequence[Event]) -> None:
        self._left_out = []  # a batch sent again after a failure is told of afresh, not twice
        if not batch:
            return
        nc, inbox = await self._ready()
        window: deque[asyncio.Future[bool]] = deque()
        limit = self.opts.max_inflight
        try:
            for event in batch:
                subject, headers, payload = self._message(event)
                # the server counts the headers too, and closes the connection on a message over its limit:
                # the same event would then fail every retry and hold up every event behind it
                if (size := wire_size(headers, payload)) > nc.max_payload:
                    log.log(logging.DEBUG if self._too_large_told else logging.ERROR,
                            "%s: event %s (%d bytes with its headers) exceeds the server's max_payload of %d; not "
                            "sent (the next ones are counted in dropped.too_large, not logged)", self._where,
                            event.id, size, nc.max_payload)
                    self._too_large_told = True
                    self._left_out.append((event, "too_large"))
                    continue
                reply, fut = inbox.expect()
                await nc.publish(subject, payload, reply=reply, headers=headers)
                self.stats.published += 1
                window.append(fut)
                if len(window) >= limit:
                    await self._await_oldest(window)
            while window:
                await self._await_oldest(window)
        except SinkError:
            await self._drop(failed=True)  # a fresh connection starts with a clean ack inbox
            raise
        except _SEND_ERRORS as exc:
            await self._drop(failed=True)
            raise SinkError(f"{self._where}: {describe(exc)}") from exc
        finally:
            for fut in window:
                fut.cancel()

    async def _await_oldest(self, window: deque[asyncio.Future[bool]]) -> None:
        fut = window[0]
        if not fut.done():
            try:
                async with asyncio.timeout(self.opts.ack_timeout):
                    await fut
            except TimeoutError:
                raise SinkError(f"{self._where}: no ack within {self.opts.ack_timeout}s") from None
        window.popleft()
        self._settle(fut)

    async def flush(self) -> None:
        """Nothing to do: ``send`` returns only once JetStream has acknowledged the whole batch."""

    async def aclose(self) -> None:
        await self._drop()

    def abort(self) -> None:
        """A close cut short: the connection is closed in the background rather than left open."""
        if self._nc is not None:
            task = asyncio.get_running_loop().create_task(self._drop())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)


#: connections being closed in the background (held so that their tasks are not collected midway)
_CLOSING: set[asyncio.Task[None]] = set()


async def _close(nc: Client) -> None:
    try:
        async with asyncio.timeout(2.0):
            await nc.close()
    except _CLOSE_ERRORS as exc:
        log.debug("closing a nats connection: %s", exc)
