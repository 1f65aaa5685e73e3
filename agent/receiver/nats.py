"""``nats://HOST:PORT/SUBJECT`` listener: a durable JetStream pull consumer feeding the pipeline.

Guests or edge agents publish CloudEvents to a stream (structured or binary
mode, per the CloudEvents NATS binding); this consumer fetches them in
batches and puts each through the same checks as a socket frame (size, JSON,
depth, attributes, signature policy, duplicate window), then hands it to the
pipeline. A message is acked only when every local sink has taken its event,
so a crash or a lost connection leaves it in the stream for redelivery:

    fetch -> size guard -> decode (structured | binary) -> validate -> policy -> dedupe -> deliver
       ack <- receipt resolves   term <- refused or undeliverable   nak(delay) <- dropped or failed

Settings beyond the common listener keys travel in the URI query:
``stream`` (default ``HOSTSTAMP_IN``), ``durable`` (default ``hoststamp``),
``create`` (``1``: create the stream over SUBJECT if missing), ``batch``
(messages per fetch, default 256), ``ack_wait`` (seconds, default 30),
``max_inflight`` (unacked messages, default 1024). ``hostpeer`` is the
listener's ``name`` if set, else ``nats:`` and the subject the message came on.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from ..codec.nats import from_binary, is_structured
from ..config import ListenerOptions
from ..errors import ConfigError, TransportError
from ..transport.nats import (
    NatsEndpoint,
    connect,
    ensure_stream,
    name_problem,
    nats_errors,
    parse_nats_uri,
    subject_problem,
)
from ..transport.sender import Backoff
from .dedupe import DedupeWindow, channel_of, key_of
from .glue import GuestPipeline, PipelineDeliver
from .policy import GuestPolicy
from .server import Deliver
from .telemetry import ReceiverStats, RejectLog
from .validate import Rejected, check_attributes, check_count, json_depth, parse_event

__all__ = ["PARAMS", "NatsSource", "NatsSourceSettings", "serve_nats"]

log = logging.getLogger("agent.receiver.nats")

PARAMS = ("stream", "durable", "create", "batch", "ack_wait", "max_inflight")
#: seconds before a dropped or undeliverable message comes back
NAK_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class NatsSourceSettings:
    endpoint: NatsEndpoint
    stream: str = "HOSTSTAMP_IN"
    durable: str = "hoststamp"
    create: bool = False
    batch: int = 256
    ack_wait: float = 30.0
    max_inflight: int = 1024

    @classmethod
    def from_uri(cls, uri: str, *, key: str = "listeners.uri") -> NatsSourceSettings:
        ep = parse_nats_uri(uri, key=key, params=PARAMS)
        q = ep.params
        conv: dict[str, Any] = {"stream": str, "durable": str, "create": _flag, "batch": int, "ack_wait": float,
                                "max_inflight": int}
        values: dict[str, Any] = {}
        for name, value in q.items():
            try:
                values[name] = conv[name](value)
            except ValueError as exc:
                want = {int: "a whole number", float: "a number"}.get(conv[name])
                said = f"expected {want}, got {value!r}" if want else str(exc)
                raise ConfigError(f"{uri!r}: {name}: {said}", key=key) from None
        s = cls(endpoint=ep, **values)
        if s.batch < 1 or s.max_inflight < 1 or not 0 < s.ack_wait < math.inf:
            raise ConfigError(f"{uri!r}: batch, max_inflight and ack_wait must be positive", key=key)
        for problem in (name_problem(s.stream, "stream"), name_problem(s.durable, "durable consumer"),
                        subject_problem(ep.subject)):
            if problem is not None:
                raise ConfigError(f"{uri!r}: {problem}", key=key)
        return s


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no", ""):
        return False
    raise ValueError(f"expected 1 or 0, got {text!r}")


async def _ensure_consumer(js: Any, s: NatsSourceSettings) -> None:
    """The durable consumer as the settings say: created when missing. One left by an earlier run with another
    ``ack_wait``, ``max_inflight`` or subject is updated to these (JetStream lets them change); one that does not
    ack explicitly cannot be used: TransportError, naming it."""
    what = f"consumer {s.durable} on {s.stream}"
    with nats_errors(what):
        try:
            have = (await js.consumer_info(s.stream, s.durable)).config
        except nats.js.errors.NotFoundError:
            have = None
        if have is None:
            await js.add_consumer(s.stream, config=ConsumerConfig(
                name=s.durable, durable_name=s.durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=s.ack_wait,
                max_ack_pending=s.max_inflight, filter_subject=s.endpoint.subject))
            return
        if have.ack_policy != AckPolicy.EXPLICIT:
            raise TransportError(f"{what} acks {getattr(have.ack_policy, 'value', have.ack_policy)}, not explicitly:"
                                 " name another durable, or delete this one")
        changes: dict[str, Any] = {}
        if have.ack_wait is None or not math.isclose(have.ack_wait, s.ack_wait, rel_tol=1e-6):
            changes["ack_wait"] = s.ack_wait
        if have.max_ack_pending != s.max_inflight:
            changes["max_ack_pending"] = s.max_inflight
        if not have.filter_subjects and have.filter_subject != s.endpoint.subject:
            changes["filter_subject"] = s.endpoint.subject
        if changes:
            was = {k: getattr(have, k) for k in changes}
            await js.add_consumer(s.stream, config=have.evolve(**changes))
            log.info("%s: updated %s (was %s)", what,
                     ", ".join(f"{k} {v}" for k, v in changes.items()), ", ".join(f"{k} {v}" for k, v in was.items()))


class NatsSource:
    """One ``nats://`` listener: reconnects with backoff until cancelled."""

    def __init__(self, options: ListenerOptions, deliver: Deliver, *, settings: NatsSourceSettings | None = None,
                 policy: GuestPolicy | None = None, dedupe: DedupeWindow | None = None,
                 backoff: Backoff | None = None) -> None:
        self.options = options
        self.settings = settings or NatsSourceSettings.from_uri(options.uri)
        self.deliver = deliver
        self.policy = policy or GuestPolicy("off")
        self.dedupe = dedupe if dedupe is not None else DedupeWindow(options.dedupe_window)
        self.stats = ReceiverStats()
        self.reject = RejectLog(self.stats, listener=f"nats {self.settings.endpoint.display}")
        self.acked = 0
        self.naked = 0
        self.terminated = 0
        self._backoff = backoff or Backoff(0.1, 10.0)
        self._inflight = 0
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: shutting down: nothing more is taken (see :meth:`finish`)
        self._finishing = False

    @classmethod
    def build(cls, options: ListenerOptions, deliver: Deliver, *, dedupe: DedupeWindow | None = None) -> NatsSource:
        return cls(options, deliver, policy=GuestPolicy.load(options.guest_signatures, options.trusted_keys),
                   dedupe=dedupe)

    async def serve(self) -> None:
        """Consume until cancelled; a lost server is retried with full-jitter backoff."""
        where = f"nats {self.settings.endpoint.display}"
        try:
            while True:
                try:
                    await self._session()
                except TransportError as exc:
                    self.stats.healthy, self.stats.last_error = False, str(exc)
                    delay = self._backoff.next()
                    log.warning("%s: %s (retrying in %.2fs)", where, exc, delay)
                    await asyncio.sleep(delay)
        finally:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.reject.flush()

    async def _session(self) -> None:
        s = self.settings
        nc = await connect(s.endpoint.server, name="hoststamp-listener")
        try:
            js = nc.jetstream()
            if s.create:
                await ensure_stream(js, s.stream, [s.endpoint.subject])
            await _ensure_consumer(js, s)
            with nats_errors(f"consumer {s.durable} on {s.stream}"):
                sub = await js.pull_subscribe_bind(durable=s.durable, stream=s.stream)
            self._backoff.reset()
            self.stats.healthy, self.stats.last_error = True, None
            log.info("nats %s: consuming %s from stream %s as %s", s.endpoint.display, s.endpoint.subject,
                     s.stream, s.durable)
            while True:
                while self._inflight >= s.max_inflight or self._finishing:  # ask for more only with a slot free
                    self._room.clear()
                    await self._room.wait()
                want = min(s.batch, s.max_inflight - self._inflight)
                try:
                    with nats_errors("fetch"):
                        msgs = await sub.fetch(want, timeout=1.0)
                except TransportError as exc:
                    if isinstance(exc.__cause__, nats.errors.TimeoutError) and nc.is_connected:
                        continue  # nothing to fetch
                    raise
                for msg in msgs:
                    self._take(msg)
        finally:
            with nats_errors("close"):
                try:
                    async with asyncio.timeout(2.0):
                        await nc.close()
                except TransportError as exc:
                    log.debug("closing: %s", exc)

    def _decode(self, msg: Msg) -> dict[str, Any]:
        """One message -> a checked event dict, or Rejected."""
        opts = self.options
        if len(msg.data) > opts.max_frame:
            raise Rejected("frame", f"message of {len(msg.data)} bytes exceeds {opts.max_frame}")
        if is_structured(msg.headers):
            event = parse_event(msg.data, max_depth=opts.max_depth, max_attributes=opts.max_attributes)
        else:
            try:
                event = from_binary(msg.headers or {}, msg.data)
            except ValueError as exc:
                raise Rejected("attributes", f"binary-mode message: {exc}") from None
            check_count(event, opts.max_attributes)
            depth = json_depth(event)
            if depth > opts.max_depth:
                raise Rejected("depth", f"JSON nesting depth {depth} exceeds {opts.max_depth}")
            check_attributes(event)
        self.policy.check(event)
        return event

    async def finish(self, timeout: float) -> None:
        """Shutting down: take no more messages, and let those taken settle, each acked (or nak'ed) to the server
        as its delivery ends, for up to ``timeout`` seconds; then the listener may be cancelled. Without this,
        a message delivered during the drain stays unacked and comes back after ``ack_wait``, a duplicate."""
        self._finishing = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def _take(self, msg: Msg) -> None:
        peer = self.options.name or f"nats:{msg.subject}"
        if self._finishing:  # fetched as the listener stops: not taken, so the server sends it again at once (nak)
            self._spawn(self._finish(msg, None, peer, let_go=True))
            return
        fut: asyncio.Future[Any] | None
        try:
            event = self._decode(msg)
        except Rejected as r:
            self.reject(peer, r.reason, r.detail)
            self._spawn(self._finish(msg, None, peer, refused=True))
            return
        key = key_of(channel_of(peer), event["source"], event["id"])
        counted = False
        if key in self.dedupe:
            self.stats.duplicates += 1
            entry = self.dedupe.get(key)  # the first copy: taken (None) or pending (its own future)
            fut = None if entry is None else entry[0]
        else:
            counted = True
            try:
                fut = asyncio.ensure_future(self.deliver(event, peer))
            except Exception as exc:
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(exc)
            self.dedupe.add(key, fut)
        self._spawn(self._finish(msg, fut, peer, counted=counted))

    def _spawn(self, coro: Any) -> None:
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        self._room.set()

    async def _outcome(self, msg: Msg, fut: asyncio.Future[Any]) -> Any:
        """The delivery's result; while it is pending, tell the server every third of ``ack_wait``: no
        redelivery, even when a beat comes late (a busy event loop)."""
        beat = self.settings.ack_wait / 3
        while True:
            done, _ = await asyncio.wait((fut,), timeout=beat)
            if done:
                return fut.result()
            try:
                await msg.in_progress()
            except (nats.errors.Error, OSError) as exc:
                log.debug("in-progress %s: %s", msg.subject, exc)

    async def _finish(self, msg: Msg, fut: asyncio.Future[Any] | None, peer: str, *, refused: bool = False,
                      counted: bool = False, let_go: bool = False) -> None:
        """Ack once the event is durable; term what is refused; nak what was dropped or failed, or ``let_go``
        (not taken). ``counted``: this message carried the event's first copy, counted as accepted once every
        sink's queue took it."""
        verdict = "nak" if let_go else "term" if refused else "ack"
        if fut is not None:
            try:
                if await self._outcome(msg, fut) is False:
                    self.stats.dropped += 1
                    verdict = "nak"
                else:
                    self.stats.accepted += counted
            except Rejected as r:  # refused, or dropped for good (a sink can never take it): never redelivered
                self.reject(peer, r.reason, r.detail)
                if r.reason == "dropped":
                    self.stats.dropped += 1
                verdict = "term"
            except Exception as exc:
                self.reject(peer, "pipeline", f"delivery failed: {exc}")
                verdict = "nak"
        try:
            if verdict == "ack":
                await msg.ack()
                self.acked += 1
            elif verdict == "term":
                await msg.term()
                self.terminated += 1
            else:
                await msg.nak(delay=None if let_go else NAK_DELAY)
                self.naked += 1
        except (nats.errors.Error, OSError) as exc:  # the connection went: the server redelivers later
            log.debug("%s %s: %s", verdict, msg.subject, exc)


async def serve_nats(options: ListenerOptions, pipeline: GuestPipeline) -> None:
    """Run one ``nats://`` ``[[listeners]]`` entry until cancelled."""
    deliver = PipelineDeliver(pipeline)
    source = NatsSource.build(options, deliver)
    try:
        await source.serve()
    finally:
        await deliver.aclose()
