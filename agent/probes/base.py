"""The probe interface.

A probe is one family of readings with one registry name (``cgroup``, ``lve``,
``mounts``, ``taskstats``, ``link``). The runner calls :meth:`Probe.collect` on a
schedule with a deadline; a probe that raises becomes an error reading, and the
other probes go on. A probe that can also be told about changes by the kernel
implements :meth:`Probe.watch`, which runs for the life of the agent and hands
readings to ``emit`` as they happen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..model import Reading

__all__ = ["Emit", "NoOptions", "Probe", "ProbeContext"]

Emit = Callable[[Reading], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class NoOptions:
    """Options of a probe that has none beyond the common ones."""


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What the composition root hands every probe it builds."""

    state_dir: Path | None = None


class Probe(ABC):
    """One probe family.

    Subclasses set ``name`` (the registry name) and ``Options`` (a frozen
    dataclass of the probe's own ``[probes.NAME]`` keys, beyond ``enabled``,
    ``interval``, ``timeout`` and ``jitter``) and register themselves with
    :func:`agent.probes.registry.register`.
    """

    name: ClassVar[str]
    Options: ClassVar[type[Any]] = NoOptions
    #: default seconds between two collections
    default_interval: ClassVar[float] = 10.0
    #: attributes a reload hands from a probe to its successor of the same options (see :meth:`carry_over`)
    carried: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Any, ctx: ProbeContext) -> None:
        self.options = options
        self.ctx = ctx

    @classmethod
    def unavailable(cls, options: Any) -> str | None:
        """Why this probe cannot work on this host, or ``None`` if it can.

        Used to pick the probes of the embedded default; cheap and sync.
        """
        return None

    @abstractmethod
    async def collect(self) -> Sequence[Reading]:
        """One round of readings. Raise :class:`~agent.errors.ProbeError` on failure."""

    async def watch(self, emit: Emit) -> None:  # noqa: B027 - optional hook
        """Emit readings on kernel notifications until cancelled (default: none)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the probe holds (sockets, child processes)."""

    def carry_over(self, before: Probe) -> None:
        """Take over what ``before`` (this probe of the running configuration, which a reload replaces) knows,
        when it reads the same things: the counters' last values, so that a change just before the reload
        shows in the next reading's ``deltas`` (a reload is no first sight)."""
        if type(before) is type(self) and before.options == self.options:
            for name in self.carried:
                setattr(self, name, getattr(before, name))

    def provenance(self) -> tuple[str, tuple[str, ...]]:
        """Where a round reads from, as far as the options tell without reading: the ``probeSource`` and
        ``inputs`` of an error reading (so even a failed round says what it tried to read)."""
        return "", ()

    def error_reading(self, exc: BaseException | str, subject: str = "") -> Reading:
        """The reading that stands for a failed collection."""
        text = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
        try:
            source, inputs = self.provenance()
        except Exception:  # the provenance itself may be what failed (a root that cannot be found)
            source, inputs = "", ()
        return Reading(probe=self.name, subject=subject or self.name, output={}, error=text, probe_source=source,
                       inputs=inputs)
