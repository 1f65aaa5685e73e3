"""What one configuration builds, and the counts that must survive it.

A :class:`Generation` holds the sinks (with their queues and workers), probes
(with their runners) and listeners built from one :class:`~agent.config.Config`;
its producers and its workers each run as a :class:`TaskSet`, so a reload can
stop one generation's producers, drain its queues and start the next one's.
:class:`Counts` keeps the queue and receiver counts of generations that are
gone, per sink (:data:`~agent.pipeline.stats.SinkKey`: its URI with any password
masked, and which of the sinks showing that it is, as its label says) and per
listener URI, so the counters ``/metrics`` exports never go back on a reload.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from . import health
from .config import Config, ProbeConfig
from .errors import ConfigError, SinkError, redact
from .pipeline import PipelineStats, ProbeRunner, SinkQueue, SinkWorker
from .pipeline.runner import Submit
from .pipeline.spoolqueue import SpoolQueue, queue_for
from .pipeline.stats import SinkKey, sink_keys, sink_label
from .probes import ProbeContext
from .probes import registry as probe_registry
from .probes.base import Probe
from .sinks import SinkContext
from .sinks import registry as sink_registry
from .sinks.base import Sink

__all__ = ["Counts", "Generation", "TaskSet", "build_probe", "build_sink", "drain", "hand_on", "host_id",
           "stranded", "time_left"]

log = logging.getLogger("hoststamp")


@dataclass(eq=False)
class TaskSet:
    """Tasks started together under one cancel scope; ``done`` is set once every one has ended."""

    scope: anyio.CancelScope | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    async def run(self, start: Callable[[TaskGroup], None], *,
                  task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with anyio.CancelScope() as self.scope:
                task_status.started()
                async with anyio.create_task_group() as tg:
                    start(tg)
        finally:
            self.done.set()

    async def wait(self, timeout: float) -> bool:
        """True if done within ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            await self.done.wait()
        return self.done.is_set()


@dataclass(eq=False)
class Generation:
    """What one configuration builds; producers and workers each run as a :class:`TaskSet`."""

    number: int
    cfg: Config
    sinks: list[Sink] = field(default_factory=list)
    queues: list[SinkQueue] = field(default_factory=list)
    workers: list[SinkWorker] = field(default_factory=list)
    probes: list[tuple[ProbeConfig, Probe]] = field(default_factory=list)
    runners: list[ProbeRunner] = field(default_factory=list)
    #: listener URI -> the receiver's counters (objects shaped like ReceiverStats)
    receivers: dict[str, Any] = field(default_factory=dict)
    #: listener URI -> what serves it (a Receiver or a NatsSource), for a shutdown to let it finish
    sources: dict[str, Any] = field(default_factory=dict)
    #: listeners of a reloaded generation that could not listen, with why (by uri)
    failed_listeners: dict[str, str] = field(default_factory=dict)
    producer_tasks: TaskSet = field(default_factory=TaskSet)
    worker_tasks: TaskSet = field(default_factory=TaskSet)
    probes_closed: bool = False

    @property
    def sink_keys(self) -> list[SinkKey]:
        """Each sink's key, in the config's order (that of ``sinks``, ``queues`` and ``workers``)."""
        return sink_keys(ep.uri for ep in self.cfg.sinks)

    def fill(self, ctx: SinkContext, stats: PipelineStats, submit: Submit) -> None:
        """Build the parts from the config; nothing is opened or started yet."""
        for ep, key in zip(self.cfg.sinks, self.sink_keys, strict=True):
            sink = build_sink(ep.scheme, ep.target, ep.options, ctx, key=ep.key)
            sink.label = sink_label(key)
            try:
                q = queue_for(ep.common)
            except NotADirectoryError as exc:  # the configured spool is not (and cannot be made) a directory
                where = ep.key if ep.key.startswith("--") else f"{ep.key.rpartition('.')[0]}.spool"
                raise ConfigError(str(exc), key=where, file=self.cfg.path) from None
            self.sinks.append(sink)
            self.queues.append(q)
            self.workers.append(SinkWorker(sink, q, stats.sink(*key), batch_max=ep.common.batch_max,
                                           label=sink_label(key)))
        for pc in self.cfg.enabled_probes():
            self.probes.append((pc, build_probe(pc, ctx.state_dir)))
        self.runners = [ProbeRunner(p, pc, submit, stats.probe(pc.name)) for pc, p in self.probes]


def host_id(configured: str | None, machine_id: Path = Path("/etc/machine-id")) -> str:
    """The configured id, else /etc/machine-id, else the host name."""
    if configured:
        return configured
    try:
        mid = machine_id.read_text().strip()
        if mid:
            return mid
    except OSError:
        pass
    return socket.gethostname()


def build_probe(pc: ProbeConfig, state_dir: Path | None) -> Probe:
    return probe_registry.get(pc.name)(pc.options, ProbeContext(state_dir=state_dir))


def build_sink(scheme: str, target: str, options: Any, ctx: SinkContext, *, key: str = "sinks.uri") -> Sink:
    """The sink for ``scheme:target``; a target it cannot take is a ConfigError naming ``key``."""
    cls = sink_registry.get(scheme)
    try:
        return cls(target, options if options is not None else cls.Options(), ctx)
    except SinkError as exc:
        raise ConfigError(str(exc), key=key) from None


def _spool_bytes(directory: str | None, q: SinkQueue) -> int | None:
    """What the sink's spool holds: the spool's own count, else the size of its directory."""
    if not directory:
        return None
    spool = getattr(q, "spool", None)  # a SpoolQueue
    held = getattr(spool, "bytes", None)
    return held if isinstance(held, int) else health.dir_bytes(Path(directory))


class Counts:
    """Per-sink and per-listener totals of retired generations, and views that add the live ones to them."""

    def __init__(self) -> None:
        self.queues: dict[SinkKey, health.QueueCounts] = {}
        self.listeners: dict[str, health.ListenerView] = {}

    def retire(self, gen: Generation) -> None:
        """Fold a drained generation's counts in."""
        for key, q in zip(gen.sink_keys, gen.queues, strict=True):
            self.queues.setdefault(key, health.QueueCounts()).add(q)
        for uri, st in gen.receivers.items():
            v = health.listener_view(uri, [st], self.listeners.get(uri))
            self.listeners[uri] = health.ListenerView(uri, v.accepted, v.duplicates, v.dropped, v.connections, 0,
                                                      v.rejected)

    def sinks(self, gens: Sequence[Generation], stats: PipelineStats) -> tuple[health.SinkView, ...]:
        """Every sink of ``gens`` (the last one is current; earlier ones are draining)."""
        live = [
            (key, q, _spool_bytes(ep.common.spool, q), g is not gens[-1],
             g.workers[i].holding if i < len(g.workers) else 0)
            for g in gens
            for i, (ep, key, q) in enumerate(zip(g.cfg.sinks, g.sink_keys, g.queues, strict=True))
        ]
        return health.sink_views(live, stats, self.queues)

    def listener_views(self, gens: Sequence[Generation]) -> tuple[health.ListenerView, ...]:
        uris = dict.fromkeys([lo.uri for g in gens for lo in g.cfg.listeners])
        return tuple(
            health.listener_view(u, [g.receivers[u] for g in gens if u in g.receivers], self.listeners.get(u),
                                 failed=next((g.failed_listeners[u] for g in gens if u in g.failed_listeners), None))
            for u in uris
        )


def time_left(gen: Generation, by: float | None) -> float:
    """Seconds until the deadline ``by`` (none left: 0), or ``gen``'s whole ``drain_timeout`` without one."""
    return gen.cfg.agent.drain_timeout if by is None else max(0.0, by - time.monotonic())


def stranded(old: Generation, new: Generation) -> str | None:
    """Why ``new`` cannot replace ``old``: a spool holding events not delivered yet that no sink of ``new``
    reads (removed or moved), so they would stay there for good; None when there is none."""
    for key, q in zip(old.sink_keys, old.queues, strict=True):
        if not isinstance(q, SpoolQueue) or not q.pending:
            continue
        if not any(isinstance(n, SpoolQueue) and n.spool is q.spool for n in new.queues):
            return (f"sink {sink_label(key)}: its spool {q.spool.dir} holds {q.pending} events not delivered yet, "
                    "which no sink of the new configuration reads; keep the spool until they are delivered")
    return None


def _successor_keys(new: Generation) -> list[tuple[SinkKey, str]]:
    """What makes a sink of ``new`` the same as one before it: the same label, and the same URI (its password
    aside). A label may pass to another URI across a reload (``URI #2``, once the second of two ``URI`` sinks,
    then a sink whose URI ends so), not its events."""
    return [(key, redact(ep.uri)) for ep, key in zip(new.cfg.sinks, new.sink_keys, strict=True)]


def hand_on(old: Generation, new: Generation) -> None:
    """What the in-memory queues of ``old`` still hold, moved to the queue of the same sink in ``new``: the one
    with its key, which counts on its counters (a spool shared by both needs nothing: the new reader reads it)."""
    successors = {k: q for k, q in zip(_successor_keys(new), new.queues, strict=True)
                  if not isinstance(q, SpoolQueue)}
    for ep, key, q, w in zip(old.cfg.sinks, old.sink_keys, old.queues, old.workers, strict=True):
        if isinstance(q, SpoolQueue) or (after := successors.get((key, redact(ep.uri)))) is None:
            continue
        held, taken = w.take_in_hand()
        items = [*held, *q.take_all()]  # the batch being retried came first
        if items:
            after.requeue_front(items)
            after.enqueued += taken  # taken by the old sink (counted sent): routed again, they count again
            log.info("sink %s: %d events not yet delivered handed to the reloaded sink", sink_label(key),
                     len(items))


#: the drop reason of events still queued for a sink (or held by its worker) when its drain's deadline passed:
#: a sink a reload removed (or changed to a spool), or any sink at a shutdown
DRAIN_TIMEOUT = "drain_timeout"


def _drop_left(gen: Generation, successor: Generation | None) -> int:
    """What ``gen``'s in-memory queues still hold at the drain's deadline (what a reload's successor takes was
    handed on already), and the batches their workers hold while they retry a sink that is down: nowhere else
    can take these events. Each sink's are logged once and counted as dropped (reason ``drain_timeout``) by its
    queue, so its counters still add up; returns how many in all."""
    gone = 0
    for ep, key, q, w in zip(gen.cfg.sinks, gen.sink_keys, gen.queues, gen.workers, strict=True):
        if isinstance(q, SpoolQueue) or not (n := len(q) + w.holding):
            continue
        q.dropped[DRAIN_TIMEOUT] = q.dropped.get(DRAIN_TIMEOUT, 0) + n
        gone += n
        why = ("the agent is stopping" if successor is None else
               "the reload removed this sink" if ep.uri not in {e.uri for e in successor.cfg.sinks} else
               "the reloaded sink does not take them over")
        log.error("sink %s: %d events still queued at the drain deadline (drain_timeout %gs) are dropped: %s",
                  sink_label(key), n, gen.cfg.agent.drain_timeout, why)
    return gone


async def _wait_by(gen: Generation, by: float, stopping: Callable[[], float | None] | None) -> bool:
    """Wait for ``gen``'s workers to end, by ``by`` or by the shutdown deadline once there is one; True if they
    did."""
    if stopping is None:
        return await gen.worker_tasks.wait(time_left(gen, by))
    while not gen.worker_tasks.done.is_set():
        end = by if (stop_by := stopping()) is None else min(by, stop_by)
        if stop_by is not None:
            for w in gen.workers:
                w.close_by = min(w.close_by or end, end)
        if end <= time.monotonic():
            break
        await gen.worker_tasks.wait(min(end - time.monotonic(), 0.1))
    return gen.worker_tasks.done.is_set()


async def drain(gen: Generation, stats: PipelineStats, by: float | None = None,
                successor: Generation | None = None, stopping: Callable[[], float | None] | None = None) -> int:
    """Close the queues; let the workers empty them into the sinks and close those, by the deadline ``by``
    (default: ``drain_timeout`` from now). A reload's ``successor``: what is still queued at the deadline
    for a sink it has too goes to that sink's new queue, ahead of what came since, rather than being lost; what
    nothing can take (a sink the reload removed, every sink at a shutdown) is logged per sink and counted in its
    queue's ``dropped["drain_timeout"]``.

    ``stopping()``: the agent's shutdown deadline once it is stopping (a reload's drain ends by it too).

    Returns how many events the drain could not deliver: left in queues at the deadline, kept in spools, taken
    by a sink that did not confirm them, or dropped by a queue."""
    for q in gen.queues:
        q.close()
    if gen.worker_tasks.scope is None:
        return 0
    undelivered = 0
    by = time.monotonic() + gen.cfg.agent.drain_timeout if by is None else by
    going_on = set(_successor_keys(successor)) if successor is not None else set()
    for ep, key, w in zip(gen.cfg.sinks, gen.sink_keys, gen.workers, strict=True):
        w.close_by = by  # a sink's last attempt to confirm and close ends with the deadline too
        w.removed = successor is not None and (key, redact(ep.uri)) not in going_on
    if not await _wait_by(gen, by, stopping):
        if successor is not None:
            hand_on(gen, successor)
        left = _drop_left(gen, successor)  # counted in the queues' drops, added below
        kept = sum(q.pending for q in gen.queues if isinstance(q, SpoolQueue))
        if left or kept:  # else nothing was left, or all of it went on to the reloaded sinks (logged there)
            log.warning("drain deadline reached; %d events not delivered, %d kept in spools", left, kept)
        gen.worker_tasks.scope.cancel()
        await gen.worker_tasks.done.wait()
    # a spool keeps what its sink did not confirm (taken or not); without one, what was taken unconfirmed is gone
    undelivered += sum(q.pending if isinstance(q, SpoolQueue) else w.unconfirmed
                       for w, q in zip(gen.workers, gen.queues, strict=True))
    # and what a queue dropped on the way (its overflow policy, a damaged spool, a put after closing)
    undelivered += sum(sum(q.dropped.values()) for q in gen.queues)
    for key, q in zip(gen.sink_keys, gen.queues, strict=True):
        if isinstance(q, SpoolQueue):
            with anyio.CancelScope(shield=True):
                await q.aclose()  # what is left stays in the spool for the next start
        drops = "".join(f" dropped.{k}={v}" for k, v in sorted(q.dropped.items()))
        log.info("sink %s: sent=%d%s blocked=%d %s=%d", sink_label(key), stats.sink(*key).sent, drops, q.blocked,
                 *(("spooled", q.pending) if isinstance(q, SpoolQueue) else ("queued", len(q))))
    return undelivered
