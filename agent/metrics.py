"""Prometheus metrics: a collector over the agent's own counters, served at ``/metrics``.

Nothing on the hot path touches prometheus-client. The pipeline keeps plain
integers (:mod:`agent.pipeline.stats`, each queue's counts, each receiver's
:class:`~agent.receiver.telemetry.ReceiverStats`); :class:`AgentCollector`
reads them only when scraped, through a callable returning an
:class:`~agent.health.AgentView`. The one measurement added to the hot path is
signing latency, and only every Nth stamp is timed (:class:`TimedStamper`).
The HTTP server that serves them is :mod:`agent.metrics_http`.
"""

from __future__ import annotations

import bisect
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from . import __version__
from .health import AgentView
from .model import Event, Reading
from .pipeline.stamp import Stamper

__all__ = [
    "AgentCollector",
    "LatencySampler",
    "TimedStamper",
    "build_registry",
]

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
        yield _gauge("hoststamp_config_generation",
                     "The configuration in effect (1 at start, +1 once a reload took effect).", (),
                     [((), v.generation)])
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
                        for r in sorted({"queue_full", "evicted", "closed", "drain_timeout", *s.dropped}
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
        yield _gauge("hoststamp_sink_events_in_hand", "Events the sink's worker took from the queue and is still "
                     "sending (retrying while the sink is down).", ("sink",), [((s.uri,), s.in_hand) for s in sinks])
        yield _gauge("hoststamp_sink_queue_capacity", "Size of the sink's queue.", ("sink",),
                     [((s.uri,), s.capacity) for s in sinks])
        yield _gauge("hoststamp_sink_spool_bytes", "Bytes in the sink's spool directory.", ("sink",),
                     [((s.uri,), s.spool_bytes) for s in sinks if s.spool_bytes is not None])
        yield _gauge("hoststamp_sink_spool_capacity_bytes", "The sink's spool_max_bytes: the bound of its backlog.",
                     ("sink",), [((s.uri,), s.spool_capacity) for s in sinks if s.spool_capacity is not None])

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
