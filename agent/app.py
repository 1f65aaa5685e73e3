"""Composition root: builds probes, pipeline, sinks and listeners from a Config and runs them.

Everything one configuration builds (sinks with their queues and workers,
probes with their runners, listeners) is a :class:`Generation`. SIGHUP builds
a new one from the re-read file; if that fails the running one stays and the
reason is logged. Otherwise the old producers stop (an event being submitted
finishes first), new events go to the new queues, the old queues drain into
the old sinks, which then close, and only then do the new sinks open, so a sink
kept across the reload sees its events in order. Signer, sequences and
counters outlive generations: a source's sequence continues without a gap.

The producers of each generation (probe runners, watchers, listeners) are
started and stopped by :class:`~agent.producers.Producers`.

Shutdown order: producers are cancelled first; then every sink queue is closed and its worker drains it into the sink
within ``agent.drain_timeout``; then the sequence store records its exact
positions so the next start continues without a gap.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from . import gctune, health
from .config import Config, ProbeConfig
from .errors import AgentError
from .generation import Counts, Generation, build_probe, build_sink, drain, host_id, stranded, time_left
from .listeners import ListenerSet
from .metrics import LatencySampler, TimedStamper, build_registry
from .metrics_http import MetricsServer, replace_server
from .model import Event, Reading
from .pipeline import PipelineStats, ProbeRunner, SequenceStore, SinkQueue, SinkWorker
from .pipeline.parallel import build_pipeline
from .pipeline.spoolqueue import SpoolQueue
from .pipeline.stats import sink_label
from .probes.base import Probe
from .producers import Producers, about
from .sdnotify import Notifier, watchdog_period
from .signals import handle_signals
from .signing.keys import SigningKey
from .sinks import SinkContext
from .sinks.base import Sink
from .status import StatusLine

__all__ = ["Agent", "build_probe", "build_sink", "host_id"]

log = logging.getLogger("hoststamp")

#: ``[agent]`` keys a reload cannot change (the signer, sequences and state stay)
#: (the host key's file is looked at by the reload itself: another key there is said, a new path to the same key
#: is not; see ``runcmds._reload_config``)
RESTART_ONLY = ("host_id", "state_dir", "sign_workers", "sign_threads", "log_format", "log_level")


def _in_effect(cfg: Config, key: str) -> object:
    """What ``[agent] key`` of ``cfg`` comes to: the host id it gives (unset is the machine's), the directory
    (whatever the spelling), else the value."""
    value = getattr(cfg.agent, key)
    if key == "host_id":
        return host_id(value)
    if key == "state_dir":
        return os.path.realpath(value)
    return value


@dataclass
class Agent:
    """One running agent. ``run()`` returns when stopped (signal, ``stop()``, or ``once``)."""

    cfg: Config
    key: SigningKey
    once: bool = False
    stats: PipelineStats = field(default_factory=PipelineStats)
    #: re-reads the configuration on SIGHUP; None: SIGHUP only logs that there is nothing to re-read
    reload_config: Callable[[], Config] | None = None
    notifier: Notifier = field(default_factory=Notifier)
    #: called once the agent runs: after the workers started (``once``), or once every listener listens
    announce: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        state = Path(self.cfg.agent.state_dir)
        self.state_dir = state
        self.host_id = host_id(self.cfg.agent.host_id)
        self.sequences = SequenceStore(state / "sequences.json")
        self.sign_latency = LatencySampler()
        self.stamper = TimedStamper(self.key, self.host_id, self.sequences, sampler=self.sign_latency)
        self._ctx = SinkContext(state_dir=state, key=self.key)
        self.gen = Generation(1, self.cfg)
        #: the number of the configuration in effect (``hoststamp_config_generation``): ``gen`` is the next one
        #: already while a reload switches to it, this only once its sinks run
        self.generation = 1
        self._fill(self.gen)
        self.pipeline = build_pipeline(self.stamper, self.gen.queues, self.stats, self.cfg.agent.sign_workers,
                                       self.cfg.agent.sign_threads)
        self._retiring: list[Generation] = []
        self.listeners = ListenerSet(self.pipeline)
        #: events the drains could not deliver: left in queues at the deadline, kept in spools, taken by a sink
        #: that did not confirm them, or dropped by a queue (``run --once`` fails when this is not 0)
        self.undelivered = 0
        self._counts = Counts()
        self._stop = anyio.Event()
        self.producers = Producers(self._submit, self.listeners, self._stop)
        #: the shutdown's one deadline, from the moment the agent is asked to stop (a reload then ends by it)
        self._stop_by: float | None = None
        self._lock = anyio.Lock()
        self._tg: TaskGroup | None = None
        self._status: StatusLine | None = None
        self.started_at = time.time()
        self.reloads_ok = self.reloads_failed = 0
        self.last_reload_error: str | None = None
        #: the failed reload's configuration runs all the same, without what failed (a listener)
        self.last_reload_applied = False
        self.metrics: MetricsServer | None = None
        self._registry = build_registry(self.view, self.sign_latency)
        self._status_file = health.StatusFile(state)
        if self.cfg.metrics.listen and not self.once:
            self.metrics = MetricsServer(self.cfg.metrics.listen, self._registry)

    # the current generation's parts, as before reloads existed
    @property
    def sinks(self) -> list[Sink]:
        return self.gen.sinks

    @property
    def queues(self) -> list[SinkQueue]:
        return self.gen.queues

    @property
    def workers(self) -> list[SinkWorker]:
        return self.gen.workers

    @property
    def probes(self) -> list[tuple[ProbeConfig, Probe]]:
        return self.gen.probes

    @property
    def runners(self) -> list[ProbeRunner]:
        return self.gen.runners

    def _fill(self, gen: Generation) -> None:
        gen.fill(self._ctx, self.stats, self._submit_many)

    def stop(self) -> None:
        self._stop.set()

    # --- producers (agent/producers.py): an event being submitted is never cut off halfway through its sinks

    async def _submit_many(self, readings: Sequence[Reading]) -> None:
        with anyio.CancelScope(shield=True):
            await self.pipeline.submit_many(readings)

    async def _submit(self, reading: Reading) -> Event | None:
        with anyio.CancelScope(shield=True):
            event = await self.pipeline.submit(reading)
        return event

    # --- sinks --------------------------------------------------------------------------------

    async def _start_workers(self, gen: Generation) -> None:
        def start(tg: TaskGroup) -> None:
            for w in gen.workers:
                tg.start_soon(w.run)

        assert self._tg is not None
        await self._tg.start(gen.worker_tasks.run, start)

    async def _drain(self, gen: Generation, by: float | None = None, successor: Generation | None = None) -> None:
        self.undelivered += await drain(gen, self.stats, by, successor, stopping=lambda: self._stop_by)

    # --- reload ---------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the configuration and switch to it; False (old one kept) if it cannot be built."""
        async with self._lock:
            if self._stop.is_set():
                return False
            self.notifier.reloading()
            try:
                return await self._reload()
            finally:
                self.write_status()
                if not self._stop.is_set():  # stopping meanwhile: STOPPING=1 was said, and stays
                    self.notifier.ready(self._status_text())

    def _reload_failed(self, reason: str, *, applied: bool = False) -> bool:
        """Count and log a failed reload: the running configuration kept, or (``applied``) the new one running
        without what ``reason`` names."""
        self.reloads_failed += 1
        self.last_reload_error = reason
        self.last_reload_applied = applied
        if applied:
            log.error("reload failed: generation %d runs without: %s", self.gen.number, reason)
        else:
            log.error("reload failed, keeping the running configuration (generation %d): %s", self.gen.number,
                      reason)
        return False

    async def _unbuild(self, new: Generation, reason: str) -> bool:
        """Close what was built of ``new`` (a reload that cannot go on) and report the failure."""
        await self.producers.close_probes(new)
        for q in new.queues:
            if isinstance(q, SpoolQueue):  # a spool the running generation may share: drop our reference
                q.close()
                await q.aclose()
        return self._reload_failed(reason)

    async def _reload(self) -> bool:
        if self.reload_config is None:
            return self._reload_failed("started without a configuration file; nothing to re-read")
        try:
            cfg = self.reload_config()
        except (AgentError, OSError, ValueError) as exc:
            return self._reload_failed(str(exc))
        new = Generation(self.gen.number + 1, cfg)
        try:
            self._fill(new)
        except Exception as exc:  # a probe or sink that cannot be built must not take the running agent down
            if not isinstance(exc, (AgentError, OSError, ValueError)):
                log.exception("reload: building generation %d failed", new.number)
            return await self._unbuild(new, str(exc))
        old = self.gen
        where = f"{cfg.path}: " if cfg.path else ""  # a ConfigError's text names its file; these name it too
        if (why := stranded(old, new)) is not None:
            return await self._unbuild(new, where + why)
        if cfg.metrics.listen != old.cfg.metrics.listen and not self.once:
            server, problem = await replace_server(self.metrics, cfg.metrics.listen, self._registry)
            if server is not self.metrics:
                self.metrics = server
                if server is not None:
                    assert self._tg is not None
                    self._tg.start_soon(server.serve)
            if problem is not None:  # the running configuration stays, metrics where they were
                return await self._unbuild(new, where + problem)
        for k in RESTART_ONLY:  # against what took effect at the start, not the file a reload read last
            if _in_effect(cfg, k) != _in_effect(self.cfg, k):
                log.warning("reload: agent.%s differs from the running value; that takes effect at the next "
                            "restart", k)
        log.info("reloading %s: generation %d -> %d", cfg.path or "the default configuration", old.number,
                 new.number)
        self._retiring.append(old)
        # what the old probes know goes on (counters' last values, an exit stream), now that the switch is sure
        before = {pc.name: p for pc, p in old.probes}
        for pc, p in new.probes:
            if pc.name in before:
                p.carry_over(before[pc.name])
        await self.producers.stop(old)
        self.gen = new
        self.pipeline.queues = list(new.queues)
        if self._status is not None:
            self._status.queues = [(ep.uri, q) for ep, q in zip(cfg.sinks, new.queues, strict=True)]
        if not self._stop.is_set():  # asked to stop meanwhile: nothing new is read or made
            assert self._tg is not None
            await self.producers.start(new, self._tg)
            await self.producers.listening(new)
        async with anyio.create_task_group() as tg:
            # asked to stop while the old sinks drain: the new producers stop now, not once the reload is done
            tg.start_soon(self.producers.stop_when_stopping, new, lambda: self._stop_by)
            # old events still being signed (in workers or threads) go to the old queues
            await self.pipeline.drain(cfg.agent.drain_timeout)
            await self._drain(old, successor=new)
            if not self._stop.is_set():
                tg.cancel_scope.cancel()
        self._retiring.remove(old)
        self._counts.retire(old)
        await self._start_workers(new)  # what the new queues hold is drained by the shutdown, if stopping
        if self._stop.is_set():
            log.info("reload to generation %d cut short: the agent is stopping", new.number)
            return False
        self.generation = new.number  # in effect now, whole or (a listener failed) without what failed
        if new.failed_listeners:  # applied, but not whole: said the same way as a reload that failed
            return self._reload_failed("; ".join(f"listener {about(uri, why)}" for uri, why in
                                                 new.failed_listeners.items()), applied=True)
        self.reloads_ok += 1
        self.last_reload_error = None
        log.info("reloaded: probes=%s sinks=%s", ",".join(pc.name for pc, _ in new.probes) or "none",
                 ",".join(map(sink_label, new.sink_keys)))
        return True

    # --- what the outside sees ------------------------------------------------------------------

    def view(self) -> health.AgentView:
        # during a reload's first steps the old generation is both retiring and current: counted once
        gens = [*(g for g in self._retiring if g is not self.gen), self.gen]
        return health.AgentView(
            pipeline=self.stats, probes=tuple(pc.name for pc, _ in self.gen.probes),
            sinks=self._counts.sinks(gens, self.stats), listeners=self._counts.listener_views(gens),
            host_id=self.host_id, keyid=self.key.keyid, config=self.gen.cfg.path, started_at=self.started_at,
            generation=self.generation, reloads_ok=self.reloads_ok, reloads_failed=self.reloads_failed,
            last_reload_ok=self.last_reload_error is None, last_reload_error=self.last_reload_error,
            last_reload_applied=self.last_reload_applied,
            metrics_url=self.metrics.url if self.metrics else None,
        )

    def _status_text(self) -> str:
        down = [s.uri for s in self.view().sinks if not s.stats.healthy]
        return f"{self.stats.signed} events signed" + (f"; sinks down: {', '.join(down)}" if down else "")

    def write_status(self, *, running: bool = True) -> None:
        """``STATE_DIR/status.json`` for ``hoststamp status``."""
        self._status_file.write(self.view(), running=running)

    async def _housekeeping(self) -> None:
        """Every second the status file; every half watchdog period WATCHDOG=1 (a stuck loop sends none)."""
        wd = watchdog_period()
        tick = min(1.0, wd) if wd else 1.0
        next_status = 0.0
        while True:
            if wd:
                self.notifier.watchdog()
            now = time.monotonic()
            if now >= next_status:
                next_status = now + 1.0
                self.write_status()
            await anyio.sleep(tick)

    def _reload_soon(self) -> None:
        assert self._tg is not None
        self._tg.start_soon(self.reload)

    async def run(self, status: StatusLine | None = None) -> None:
        self._status = status
        if not self.once:
            gctune.tune()  # everything made so far lives as long as the agent (see agent/gctune.py)
        try:
            if self.metrics is not None:
                try:
                    await self.metrics.start()
                except OSError as exc:
                    raise AgentError(f"metrics.listen: cannot listen on {self.cfg.metrics.listen}: "
                                     f"{exc.strerror or exc}") from None
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self._start_workers(self.gen)
                if self.once:
                    if self.cfg.listeners:
                        log.warning("--once: one round of the probes only; the listeners (%s) are not started",
                                    ", ".join(ep.uri for ep in self.cfg.listeners))
                    if self.announce is not None:
                        self.announce()
                    async with anyio.create_task_group() as once:
                        for r in self.gen.runners:
                            once.start_soon(r.run_once)
                else:
                    await tg.start(functools.partial(handle_signals, self._stop, self._reload_soon))
                    if self.metrics is not None:
                        tg.start_soon(self.metrics.serve)
                    await self.producers.start(self.gen, tg)
                    await self.producers.listening(self.gen)
                    if not self._stop.is_set():
                        if self.announce is not None:
                            self.announce()
                        tg.start_soon(self._housekeeping)
                        if status is not None:
                            tg.start_soon(status.run)
                        self.notifier.ready(self._status_text())
                    await self._stop.wait()
                    self.notifier.stopping()
                # one deadline for all of it, from now: a reload under way, blocked producers, what is being
                # signed, the queues, the sinks
                by = self._stop_by = time.monotonic() + self.gen.cfg.agent.drain_timeout
                async with self._lock:
                    # guests get the acks of what the listeners took, as it is delivered, before they close
                    await self.listeners.finish(self.gen, time_left(self.gen, by))
                    await self.producers.stop(self.gen, by)
                    # events still being signed reach the queues first
                    await self.pipeline.aclose(time_left(self.gen, by))
                    await self._drain(self.gen, by)
                tg.cancel_scope.cancel()
        finally:
            await self.producers.close_probes(self.gen)
            self.sequences.close()
            if not self.once:
                self.write_status(running=False)
            self.notifier.close()
        if self.producers.fatal is not None:
            raise self.producers.fatal
