"""The ``[[listeners]]`` of a running agent: each one served into the pipeline, its duplicate window kept across
reloads.

:class:`ListenerSet` is the agent's part that knows how a listener is served (``unix:``/``vsock:``/
``fcvsock:`` by :class:`~agent.receiver.Receiver`, ``nats://`` by :class:`~agent.receiver.nats.NatsSource`),
with which duplicate window, and where its counters go. What a listener that cannot listen means for the agent
(fatal at start, logged on a reload) is decided by :mod:`agent.producers`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .config import ListenerOptions
from .generation import Generation
from .receiver.dedupe import DedupeWindow

if TYPE_CHECKING:
    from .pipeline.router import Pipeline

__all__ = ["ListenerSet"]


class ListenerSet:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        #: each listener's duplicate window, by (uri, dedupe_window): kept across reloads while configured
        self._windows: dict[tuple[str, int], DedupeWindow] = {}

    def window(self, gen: Generation, opts: ListenerOptions) -> DedupeWindow:
        """``opts``'s duplicate window: the one its listener had before a reload, if the two agree on it; a
        guest re-sending what the old one took is then still recognized."""
        wanted = {(o.uri, o.dedupe_window) for o in gen.cfg.listeners}
        for k in [k for k in self._windows if k not in wanted]:
            del self._windows[k]
        key = (opts.uri, opts.dedupe_window)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = DedupeWindow(opts.dedupe_window)
        return window

    async def serve(self, gen: Generation, opts: ListenerOptions) -> None:
        """Serve one listener of ``gen`` until cancelled; AgentError or OSError when it cannot listen."""
        from .receiver import PipelineDeliver, Receiver
        from .receiver.nats import NatsSource

        kind: type[Receiver] | type[NatsSource] = NatsSource if opts.uri.lower().startswith("nats:") else Receiver
        window = self.window(gen, opts)
        await self.pipeline.start()  # signing workers, if any, start with the first listener
        deliver = PipelineDeliver(self.pipeline)
        try:
            # a guest done sending waits for its acks up to the agent's drain_timeout (docs/protocol.md)
            extra = {"drain_timeout": gen.cfg.agent.drain_timeout} if kind is Receiver else {}
            source = kind.build(opts, deliver, dedupe=window, **extra)
            gen.receivers[opts.uri] = source.stats  # read by /metrics and the status file
            gen.sources[opts.uri] = source
            await source.serve()
        finally:
            await deliver.aclose()

    @staticmethod
    async def finish(gen: Generation, timeout: float) -> None:
        """Shutting down: every listener of ``gen`` stops taking (no new connection, nothing more read), and
        what it took settles and is acknowledged to its guests, for up to ``timeout`` seconds in all; then they
        may be cancelled. Without this, a guest whose events are delivered during the drain gets no ack for
        them and sends them again at the next start."""
        finishing = [f(timeout) for s in gen.sources.values() if (f := getattr(s, "finish", None)) is not None]
        if finishing:
            await asyncio.gather(*finishing)

    @staticmethod
    def all_listening(gen: Generation) -> bool:
        return all(o.uri in gen.receivers or o.uri in gen.failed_listeners for o in gen.cfg.listeners)
