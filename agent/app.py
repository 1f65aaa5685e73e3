"""Composition root: builds probes, pipeline, sinks and listeners from a Config and runs them.

Shutdown order: producers (probe runners, watchers, listeners) are cancelled
first; then every sink queue is closed and its worker drains it into the sink
within ``agent.drain_timeout``; then the sequence store records its exact
positions so the next start continues without a gap.
"""

from __future__ import annotations

import logging
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .config import Config, ProbeConfig
from .errors import ConfigError, SinkError
from .pipeline import Pipeline, PipelineStats, ProbeRunner, SequenceStore, SinkQueue, SinkWorker, Stamper
from .probes import ProbeContext
from .probes import registry as probe_registry
from .probes.base import Probe
from .signing.keys import SigningKey
from .sinks import SinkContext
from .sinks import registry as sink_registry
from .sinks.base import Sink
from .status import StatusLine

__all__ = ["Agent", "build_probe", "build_sink", "host_id"]

log = logging.getLogger("hoststamp")


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


def build_sink(scheme: str, target: str, options: Any, ctx: SinkContext) -> Sink:
    cls = sink_registry.get(scheme)
    try:
        return cls(target, options if options is not None else cls.Options(), ctx)
    except SinkError as exc:
        raise ConfigError(str(exc), key="sinks.uri") from None


@dataclass
class Agent:
    """One running agent. ``run()`` returns when stopped (signal, ``stop()``, or ``once``)."""

    cfg: Config
    key: SigningKey
    once: bool = False
    stats: PipelineStats = field(default_factory=PipelineStats)

    def __post_init__(self) -> None:
        state = Path(self.cfg.agent.state_dir)
        self.state_dir = state
        self.host_id = host_id(self.cfg.agent.host_id)
        self.sequences = SequenceStore(state / "sequences.json")
        self.stamper = Stamper(self.key, self.host_id, self.sequences)
        ctx = SinkContext(state_dir=state, key=self.key)
        self.sinks: list[Sink] = []
        self.queues: list[SinkQueue] = []
        self.workers: list[SinkWorker] = []
        for ep in self.cfg.sinks:
            sink = build_sink(ep.scheme, ep.target, ep.options, ctx)
            q = SinkQueue(ep.common.queue_size, ep.common.overflow)
            self.sinks.append(sink)
            self.queues.append(q)
            self.workers.append(SinkWorker(sink, q, self.stats.sink(ep.uri), batch_max=ep.common.batch_max))
        self.pipeline = Pipeline(self.stamper, self.queues, self.stats)
        self.probes: list[tuple[ProbeConfig, Probe]] = [
            (pc, build_probe(pc, state)) for pc in self.cfg.enabled_probes()
        ]
        self.runners = [
            ProbeRunner(p, pc, self.pipeline.submit_many, self.stats.probe(pc.name)) for pc, p in self.probes
        ]
        self._stop = anyio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                self._stop.set()
                return

    async def _produce(self) -> None:
        async with anyio.create_task_group() as tg:
            if self.once:
                for r in self.runners:
                    tg.start_soon(r.run_once)
                return
            for r in self.runners:
                tg.start_soon(r.run)
            for _pc, p in self.probes:
                tg.start_soon(p.watch, self.pipeline.submit)
            for listener in self._listeners():
                tg.start_soon(listener)

    def _listeners(self) -> list[Any]:
        """Coroutine functions serving each configured listener (the receiver)."""
        if not self.cfg.listeners:
            return []
        from .receiver import serve_listener
        from .receiver.nats import serve_nats

        return [lambda opts=opts: (serve_nats if opts.uri.lower().startswith("nats:") else serve_listener)(
            opts, self.pipeline) for opts in self.cfg.listeners]

    async def run(self, status: StatusLine | None = None) -> None:
        try:
            async with anyio.create_task_group() as workers:
                for w in self.workers:
                    workers.start_soon(w.run)
                async with anyio.create_task_group() as producers:
                    if self.once:
                        await self._produce()
                    else:
                        producers.start_soon(self._produce)
                        producers.start_soon(self._signals)
                        if status is not None:
                            producers.start_soon(status.run)
                        await self._stop.wait()
                    producers.cancel_scope.cancel()
                self.pipeline.close()
                with anyio.move_on_after(self.cfg.agent.drain_timeout) as drain:
                    while not all(w.finished for w in self.workers):
                        await anyio.sleep(0.02)
                if drain.cancel_called:
                    left = sum(len(q) for q in self.queues)
                    log.warning("drain deadline reached; %d events not delivered", left)
                    workers.cancel_scope.cancel()
        finally:
            for _pc, p in self.probes:
                with anyio.CancelScope(shield=True):
                    try:
                        await p.aclose()
                    except Exception:  # closing a probe never hides the real outcome
                        log.exception("probe %s: close failed", _pc.name)
            self.sequences.close()
