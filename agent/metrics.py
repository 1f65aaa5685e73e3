"""Prometheus metrics: a collector over the agent's own counters, served at ``/metrics``.

Nothing on the hot path touches prometheus-client. The pipeline keeps plain
integers (:mod:`agent.pipeline.stats`, each queue's counts, each receiver's
:class:`~agent.receiver.telemetry.ReceiverStats`); :class:`AgentCollector`
reads them only when scraped, through a callable returning an
:class:`~agent.health.AgentView`. The one measurement added to the hot path is
signing latency, and only every Nth stamp is timed (:class:`TimedStamper`).

:class:`MetricsServer` is a small asyncio HTTP/1.x server in the agent's own
event loop, so a scrape reads the counters between two events, never halfway
through one, and no thread shares them. Requests are size- and time-bounded; a
peer's malformed request is logged once per peer.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gzip
import logging
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from . import __version__
from .health import AgentView
from .logs import OncePerKey
from .model import Event, Reading
from .pipeline.stamp import Stamper
from .transport.uri import split_hostport

__all__ = [
    "AgentCollector",
    "LatencySampler",
    "MetricsServer",
    "TimedStamper",
    "build_registry",
    "replace_server",
]

log = logging.getLogger("hoststamp.metrics")

#: signing latency buckets (seconds): an Ed25519 signature alone is ~21 µs here
SIGN_BUCKETS = (25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 50e-3)

#: every refusal reason a receiver counts, exported as 0 until it happens (so rate() works)
RECEIVER_REASONS: tuple[str, ...]
try:
    from .receiver.validate import REASONS as RECEIVER_REASONS
except ImportError:  # pragma: no cover - the receiver is optional
    RECEIVER_REASONS = ()


class LatencySampler:
    """A fixed-bucket histogram fed with a sample of durations."""

    def __init__(self, buckets: Iterable[float] = SIGN_BUCKETS, *, every: int = 64) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self.buckets = tuple(sorted(buckets))
        self.every = every
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for bound, n in zip((*map(repr, self.buckets), "+Inf"), self.counts, strict=True):
            acc += n
            out.append((bound, float(acc)))
        return out


class TimedStamper(Stamper):
    """A :class:`Stamper` that times one stamp in ``sampler.every`` (stamp, sign and serialize)."""

    def __init__(self, *args: Any, sampler: LatencySampler, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sampler = sampler
        self._left = sampler.every

    def stamp(self, reading: Reading) -> Event:
        self._left -= 1
        if self._left:
            return super().stamp(reading)
        self._left = self.sampler.every
        t0 = time.perf_counter()
        ev = super().stamp(reading)
        self.sampler.observe(time.perf_counter() - t0)
        return ev

    def stamp_guests(self, events: Sequence[Mapping[str, Any]], hostpeer: str, **kw: Any
                     ) -> list[Event | Exception]:
        """A batch counts as many stamps as it has events; a sampled batch is observed as its mean per event."""
        self._left -= len(events)
        if self._left > 0 or not events:
            return super().stamp_guests(events, hostpeer, **kw)
        self._left = self.sampler.every
        t0 = time.perf_counter()
        out = super().stamp_guests(events, hostpeer, **kw)
        self.sampler.observe((time.perf_counter() - t0) / len(events))
        return out


def _counter(name: str, doc: str, labels: tuple[str, ...], rows: Iterable[tuple[tuple[str, ...], float]]) -> Metric:
    fam = CounterMetricFamily(name, doc, labels=labels)
    for values, v in rows:
        fam.add_metric(values, v)
    return fam


def _gauge(name: str, doc: str, labels: tuple[str, ...], rows: Iterable[tuple[tuple[str, ...], float]]) -> Metric:
    fam = GaugeMetricFamily(name, doc, labels=labels)
    for values, v in rows:
        fam.add_metric(values, v)
    return fam


class AgentCollector(Collector):
    """Reads the agent's counters at scrape time; ``view`` returns the current :class:`AgentView`."""

    def __init__(self, view: Callable[[], AgentView], sampler: LatencySampler | None = None) -> None:
        self.view = view
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        v = self.view()
        st = v.pipeline
        yield _gauge("hoststamp_build_info", "Build and identity of the running agent (always 1).",
                     ("version", "python", "keyid", "hostid"),
                     [((__version__, platform.python_version(), v.keyid, v.host_id), 1)])
        yield _gauge("hoststamp_start_time_seconds", "Unix time the agent started.", (), [((), v.started_at)])
        yield from self._probes(v)
        yield _counter("hoststamp_events_signed", "Events stamped and signed (probe readings and guest events).",
                       (), [((), st.signed)])
        yield _counter("hoststamp_readings_rejected",
                       "Probe readings JSON cannot carry (sent as error events) and guest events the host could "
                       "not stamp (refused to their sender).", (), [((), st.rejected)])
        yield from self._sinks(v)
        yield from self._listeners(v)
        if self.sampler is not None:
            s = self.sampler
            h = HistogramMetricFamily("hoststamp_sign_duration_seconds",
                                      f"Time to stamp, sign and serialize one event (one in {s.every} timed).")
            h.add_metric([], s.cumulative(), s.sum)
            yield h
        yield _gauge("hoststamp_config_generation", "Configuration generation (1 at start, +1 per reload).",
                     (), [((), v.generation)])
        yield _counter("hoststamp_config_reloads", "Configuration reloads (SIGHUP) by result.", ("result",),
                       [(("success",), v.reloads_ok), (("failure",), v.reloads_failed)])
        yield _gauge("hoststamp_config_last_reload_successful", "1 if the last reload succeeded (or none happened).",
                     (), [((), 1 if v.last_reload_ok else 0)])

    def _probes(self, v: AgentView) -> Iterator[Metric]:
        rows = [(name, v.pipeline.probes.get(name)) for name in v.probes]
        stats = [((n,), p) for n, p in rows if p is not None]
        yield _gauge("hoststamp_probe_duration_seconds", "Duration of the probe's last round.", ("probe",),
                     [(k, p.last_duration) for k, p in stats])
        yield _gauge("hoststamp_probe_success", "1 if the probe's last round succeeded.", ("probe",),
                     [(k, 1 if p.last_success else 0) for k, p in stats])
        yield _counter("hoststamp_probe_runs", "Rounds the probe ran.", ("probe",), [(k, p.runs) for k, p in stats])
        yield _counter("hoststamp_probe_failures", "Rounds that failed or timed out.", ("probe",),
                       [(k, p.failures) for k, p in stats])
        yield _counter("hoststamp_probe_readings", "Readings the probe produced (error readings included).",
                       ("probe",), [(k, p.readings) for k, p in stats])

    def _sinks(self, v: AgentView) -> Iterator[Metric]:
        sinks = v.sinks
        yield _counter("hoststamp_sink_events_enqueued", "Events routed to the sink's queue.", ("sink",),
                       [((s.uri,), s.enqueued) for s in sinks])
        yield _counter("hoststamp_sink_events_sent", "Events the sink took.", ("sink",),
                       [((s.uri,), s.stats.sent) for s in sinks])
        yield _counter("hoststamp_sink_events_dropped", "Events dropped before the sink, by reason.",
                       ("sink", "reason"),
                       [((s.uri, r), s.dropped.get(r, 0)) for s in sinks
                        for r in sorted({"queue_full", "evicted", "closed", *s.dropped}
                                        | ({"spool_full"} if s.spool_bytes is not None else set()))])
        yield _counter("hoststamp_sink_queue_blocked", "Times a producer waited for room in the queue (block).",
                       ("sink",), [((s.uri,), s.blocked) for s in sinks])
        yield _counter("hoststamp_sink_events_duplicate",
                       "Events sent that the destination already had (a NATS server's duplicate ack), stored once.",
                       ("sink",), [((s.uri,), s.stats.duplicates) for s in sinks])
        yield _counter("hoststamp_sink_send_errors",
                       "Failed sends, flushes and opens, spool reads and cursor writes (each retried).", ("sink",),
                       [((s.uri,), s.stats.send_errors) for s in sinks])
        yield _gauge("hoststamp_sink_up", "1 if the sink's last operation succeeded.", ("sink",),
                     [((s.uri,), 1 if s.stats.healthy else 0) for s in sinks])
        yield _gauge("hoststamp_sink_queue_depth", "Events waiting in the sink's queue.", ("sink",),
                     [((s.uri,), s.depth) for s in sinks])
        yield _gauge("hoststamp_sink_queue_capacity", "Size of the sink's queue.", ("sink",),
                     [((s.uri,), s.capacity) for s in sinks])
        yield _gauge("hoststamp_sink_spool_bytes", "Bytes in the sink's spool directory.", ("sink",),
                     [((s.uri,), s.spool_bytes) for s in sinks if s.spool_bytes is not None])

    def _listeners(self, v: AgentView) -> Iterator[Metric]:
        ls = v.listeners
        yield _gauge("hoststamp_listener_up", "1 when the listener takes events (a NATS listener: connected and "
                     "consuming), else 0.", ("listener",), [((li.uri,), 1 if li.healthy else 0) for li in ls])
        yield _counter("hoststamp_receiver_connections", "Connections accepted.", ("listener",),
                       [((li.uri,), li.connections) for li in ls])
        yield _gauge("hoststamp_receiver_connections_open", "Connections open now.", ("listener",),
                     [((li.uri,), li.connections_open) for li in ls])
        yield _counter("hoststamp_receiver_events_accepted",
                       "Guest events stamped and taken into every sink queue (not refused, dropped or failed).",
                       ("listener",), [((li.uri,), li.accepted) for li in ls])
        yield _counter("hoststamp_receiver_events_duplicate", "Guest events seen again within the dedupe window.",
                       ("listener",), [((li.uri,), li.duplicates) for li in ls])
        yield _counter("hoststamp_receiver_events_dropped", "Guest events a sink queue dropped (acked as refused).",
                       ("listener",), [((li.uri,), li.dropped) for li in ls])
        yield _counter("hoststamp_receiver_frames_rejected", "Frames or connections refused, by reason.",
                       ("listener", "reason"),
                       [((li.uri, r), li.rejected.get(r, 0)) for li in ls
                        for r in sorted({*RECEIVER_REASONS, *li.rejected})])


def build_registry(view: Callable[[], AgentView], sampler: LatencySampler | None = None, *,
                   process: bool = True) -> CollectorRegistry:
    """A registry with the agent's collector (and the process and platform collectors)."""
    from prometheus_client import PlatformCollector, ProcessCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(AgentCollector(view, sampler))
    if process:
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
    return reg


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_INDEX = b"<html><body><h1>hoststamp</h1><p><a href=\"/metrics\">metrics</a></p></body></html>\n"


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header takes gzip: named (any case) or as ``*``, with a q-value above 0."""
    quality: dict[str, float] = {}
    for item in header.split(","):
        name, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name:
            quality[name.lower()] = q
    q = quality.get("gzip", quality.get("x-gzip", quality.get("*", 0.0)))
    return q > 0


class MetricsServer:
    """``GET /metrics`` (text or OpenMetrics, gzip when asked), ``GET /healthz``, on HOST:PORT."""

    def __init__(self, listen: str, registry: CollectorRegistry, *, max_connections: int = 64,
                 request_timeout: float = 10.0, max_request: int = 16384) -> None:
        self.host, self.port = split_hostport(listen)
        self.registry = registry
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.max_request = max_request
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._closed = anyio.Event()
        self._open = 0
        #: connections that have not sent their whole request yet, oldest first: made room of when full
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self._bad = OncePerKey(log, max_keys=256)
        self.scrapes = 0

    @property
    def url(self) -> str | None:
        """``http://HOST:PORT/metrics`` once bound."""
        if self.address is None:
            return None
        host = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        return f"http://{host}:{self.address[1]}/metrics"

    async def start(self) -> tuple[str, int]:
        """Bind and listen (an OSError, such as a port in use, propagates); returns the bound address."""
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host or None, self.port,
                                                      limit=self.max_request, reuse_address=True)
            sock = self._server.sockets[0].getsockname()
            self.address = (str(sock[0]), int(sock[1]))
            log.info("metrics on %s", self.url)
        assert self.address is not None
        return self.address

    async def serve(self, *, task_status: TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`close` or cancelled (starting first if needed), then stop listening."""
        task_status.started(await self.start())
        try:
            await self._closed.wait()
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening (the address is free when this returns) and end :meth:`serve`."""
        self._closed.set()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self._open += 1
        try:
            if self._open > self.max_connections and not self._make_room():
                await self._respond(writer, 503, b"too many connections\n")
                return
            async with asyncio.timeout(self.request_timeout):
                self._waiting[writer] = None
                try:
                    head = await self._read_head(reader)
                finally:
                    self._waiting.pop(writer, None)
                status, body, headers = self._route(head)
                await self._respond(writer, status, body, headers, head_only=head.startswith(b"HEAD "))
        except ValueError as exc:  # not an HTTP/1.x request line: say so, once per peer in the log
            self._bad(host, "metrics: bad request from %s: %s", host, exc)
            with contextlib.suppress(OSError):
                await self._respond(writer, 400, b"bad request\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            self._bad(host, "metrics: bad request from %s: %s", host, type(exc).__name__)
        except OSError:
            pass  # the peer went away
        finally:
            self._open -= 1
            writer.close()

    def _make_room(self) -> bool:
        """At the connection limit: close the connection that has waited longest without sending its request
        (idle connections never keep a scrape or a health check out); False when every one is being answered."""
        for writer in self._waiting:
            del self._waiting[writer]
            writer.close()
            return True
        return False

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        """The request line and headers, up to the empty line; lines may end in CRLF or LF alone (RFC 9112
        section 2.2 lets a server take a bare LF)."""
        lines: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\n")
            size += len(line)
            if size > self.max_request:
                raise asyncio.LimitOverrunError("request head too large", size)
            line = line.rstrip(b"\r\n")
            if not line:
                if lines:
                    return b"\r\n".join(lines) + b"\r\n\r\n"
                continue  # empty lines before a request line are ignored (RFC 9112 section 2.2)
            lines.append(line)

    def _route(self, head: bytes) -> tuple[int, bytes, dict[str, str]]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x request line: {lines[0][:60]!r}")
        method, target, _version = parts
        hdrs = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                hdrs[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", {"Allow": "GET, HEAD"}
        if target.lower().startswith(("http://", "https://")):  # the absolute form (RFC 9112 section 3.2.2)
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path = target.split("?", 1)[0]
        if path == "/metrics":
            self.scrapes += 1
            encoder, ctype = choose_encoder(hdrs.get("accept", ""))
            body = encoder(self.registry)
            extra = {"Content-Type": ctype}
            if accepts_gzip(hdrs.get("accept-encoding", "")):
                body = gzip.compress(body, compresslevel=1)
                extra["Content-Encoding"] = "gzip"
            return 200, body, extra
        if path == "/healthz":
            return 200, b"ok\n", {}
        if path == "/":
            return 200, _INDEX, {"Content-Type": "text/html; charset=utf-8"}
        return 404, b"not found\n", {}

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                       headers: dict[str, str] | None = None, *, head_only: bool = False) -> None:
        hdrs = {"Content-Type": "text/plain; charset=utf-8", **(headers or {}),
                "Content-Length": str(len(body)), "Connection": "close"}
        out = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        writer.write(out.encode("latin-1") + b"\r\n" + (b"" if head_only else body))
        await writer.drain()


async def replace_server(old: MetricsServer | None, listen: str | None,
                         registry: CollectorRegistry) -> tuple[MetricsServer | None, str | None]:
    """A started server at ``listen`` in place of ``old`` (closed), or None for no address: ``(server, None)``.

    If ``listen`` cannot be bound, ``(server, reason)``, where ``server`` serves where ``old`` did: ``old``
    itself, or (when it had to free its port for a retry, as it may hold the same one) a new server started at
    its address. The caller then keeps the running configuration.
    """
    if not listen:
        if old is not None:
            old.close()
        return None, None
    new = MetricsServer(listen, registry)
    try:
        await new.start()
    except OSError as exc:
        if old is None:
            return None, f"metrics.listen: cannot listen on {listen}: {exc.strerror or exc}"
        port = old.address[1] if old.address is not None else old.port  # the port it had (chosen, if 0)
        before = f"[{old.host}]:{port}" if ":" in old.host else f"{old.host}:{port}"
        old.close()
        try:
            await new.start()
        except OSError as again:
            reason = f"metrics.listen: cannot listen on {listen}: {again.strerror or again}"
            back = MetricsServer(before, registry)
            try:
                await back.start()
            except OSError as lost:
                log.error("metrics: cannot listen on %s again either: %s; no metrics until the next reload",
                          before, lost.strerror or lost)
                return None, reason
            return back, reason
    if old is not None:
        old.close()
    return new, None
