"""What makes a running agent's events: each generation's probe rounds, probes' change events and listeners.

A generation's producers run as one :class:`~agent.generation.TaskSet` in the
agent's task group, so that a reload or a shutdown stops them together. They
submit through the agent's shielded submit: stopping them never cuts an event
off halfway through its sinks. A probe's change events that fail become an
error reading of that probe; a listener that cannot listen ends the agent at
start (:attr:`Producers.fatal`, cleanly: the queues drain) and, on a reload,
fails that reload while the rest of the new generation runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

from .config import ListenerOptions
from .errors import AgentError
from .generation import Generation, time_left
from .listeners import ListenerSet
from .model import Event, Reading
from .probes.base import Probe

__all__ = ["Producers", "about"]

log = logging.getLogger("hoststamp")


class Producers:
    """Starts and stops the producers of each generation; ``submit`` hands a reading on (shielded)."""

    def __init__(self, submit: Callable[[Reading], Awaitable[Event | None]], listeners: ListenerSet,
                 stop: anyio.Event) -> None:
        self._submit = submit
        self.listeners = listeners
        #: the agent's stop: set by a listener that cannot listen at start
        self._stop = stop
        #: why the agent must end: a listener that could not listen at start
        self.fatal: AgentError | None = None

    async def start(self, gen: Generation, tg: TaskGroup) -> None:
        """Start ``gen``'s probe rounds, change events and listeners as its producer tasks, in ``tg``."""
        def start(group: TaskGroup) -> None:
            for r in gen.runners:
                group.start_soon(r.run)
            for pc, p in gen.probes:
                group.start_soon(self._watch, pc.name, p)
            for opts in gen.cfg.listeners:
                group.start_soon(self._listen, gen, opts)

        await tg.start(gen.producer_tasks.run, start)

    async def _watch(self, name: str, probe: Probe) -> None:
        """One probe's change events. Their failure is an error reading of that probe, and the end of its change
        events, never of the agent: its rounds and the other probes go on."""
        try:
            await probe.watch(self._submit)
        except Exception as exc:
            if isinstance(exc, (AgentError, OSError)):
                log.warning("probe %s: change events stopped: %s", name, exc)
            else:  # not a foreseen failure: a bug, worth a traceback
                log.error("probe %s: change events failed unexpectedly", name, exc_info=exc)
            await self._submit(probe.error_reading(f"change events stopped: {str(exc) or type(exc).__name__}"))

    async def _listen(self, gen: Generation, opts: ListenerOptions) -> None:
        """One listener; on a reload a listener that cannot start is logged, not fatal."""
        try:
            await self.listeners.serve(gen, opts)
        except Exception as exc:  # one listener's failure, foreseen or not, never takes the agent down with it
            if not isinstance(exc, (AgentError, OSError)):
                log.error("listener %s: failed unexpectedly", opts.uri, exc_info=exc)
            if gen.number > 1:  # the reload that started it counts as failed (see Agent._reload)
                gen.failed_listeners[opts.uri] = str(exc)
                log.error("listener %s (not listening until the next reload)", about(opts.uri, str(exc)))
                return
            # at start a listener that cannot listen ends the agent (cleanly: queues drain), as a bad config would
            self.fatal = exc if isinstance(exc, AgentError) else AgentError(about(opts.uri, str(exc)))
            self._stop.set()

    async def listening(self, gen: Generation, timeout: float = 10.0) -> None:
        """Wait (up to ``timeout``) until every listener of ``gen`` listens, or one failed and stops the agent."""
        with anyio.move_on_after(timeout):
            while not self._stop.is_set() and not self.listeners.all_listening(gen):
                await anyio.sleep(0.005)

    async def stop(self, gen: Generation, by: float | None = None) -> None:
        """Cancel; a submit blocked on a full queue gets until ``by`` (default: ``drain_timeout`` from now), then
        the queues close under it."""
        if gen.producer_tasks.scope is None:
            return
        gen.producer_tasks.scope.cancel()
        if not await gen.producer_tasks.wait(time_left(gen, by)):
            log.warning("probes and listeners not done handing events over by the drain's deadline; the queues "
                        "close under them (what they still hand over is counted as dropped, reason closed)")
            for q in gen.queues:
                q.close()
            await gen.producer_tasks.done.wait()
        await self.close_probes(gen)

    async def stop_when_stopping(self, gen: Generation, stop_by: Callable[[], float | None]) -> None:
        """Once the agent is asked to stop: ``gen``'s listeners finish (what they took is acked as it is
        delivered) and its producers stop, by the shutdown's deadline (``stop_by()``, once there is one)."""
        await self._stop.wait()
        by = stop_by()
        by = by if by is not None else time.monotonic() + gen.cfg.agent.drain_timeout
        await self.listeners.finish(gen, time_left(gen, by))
        await self.stop(gen, by)

    @staticmethod
    async def close_probes(gen: Generation) -> None:
        """Close ``gen``'s probes, once; a probe that fails to close is logged."""
        if gen.probes_closed:
            return
        gen.probes_closed = True
        for pc, p in gen.probes:
            with anyio.CancelScope(shield=True):
                try:
                    await p.aclose()
                except Exception:  # closing a probe never hides the real outcome
                    log.exception("probe %s: close failed", pc.name)


def about(uri: str, text: str) -> str:
    """``text`` said of the listener ``uri``: named once, whether or not the text names it already."""
    return text if text.startswith(uri) else f"{uri}: {text}"
