"""The sink interface, shaped after the OpenTelemetry exporter contract.

A sink takes batches of signed events. ``send`` either takes the whole batch
(returns) or raises :class:`~agent.errors.SinkError`; the pipeline keeps a batch
that failed and retries it, so a sink never has to buffer on its own. ``flush``
makes what was sent durable to the sink's own standard (fsync for files, an
acknowledgement for sockets); ``aclose`` flushes and releases.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..model import Event

__all__ = ["NoSinkOptions", "Sink", "SinkContext"]


@dataclass(frozen=True, slots=True)
class NoSinkOptions:
    """Options of a sink that has none beyond the common ones."""


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What the composition root hands every sink it builds."""

    state_dir: Path | None = None
    #: the host signing key (``agent.signing.keys.SigningKey``), for sinks that sign records
    key: Any = None


class Sink(ABC):
    """One destination. Subclasses set ``scheme`` and ``Options``."""

    scheme: ClassVar[str]
    Options: ClassVar[type[Any]] = NoSinkOptions

    def __init__(self, target: str, options: Any, ctx: SinkContext) -> None:
        #: the part of the URI after ``scheme:``
        self.target = target
        self.options = options
        self.ctx = ctx
        #: set by the sink's worker: told of a failure the sink retries by itself in the background (a failed
        #: connect, a broken connection), with what went wrong, and of its recovery (None), so that the sink's
        #: health and error count show it before a send or flush fails
        self.on_trouble: Callable[[str | None], None] | None = None
        #: set by the sink's worker: called when :meth:`take_dropped` has something to hand over before the next
        #: flush (a downstream's refusals, which come with its acks, while it holds earlier events)
        self.on_left_out: Callable[[], None] | None = None
        self._label: str | None = None

    def trouble(self, error: str | None) -> None:
        """Tell the worker of a failure retried in the background (``error``) or of the recovery (None)."""
        if self.on_trouble is not None:
            self.on_trouble(error)

    @property
    def uri(self) -> str:
        return f"{self.scheme}:{self.target}"

    @property
    def label(self) -> str:
        """What the sink's log lines call it: what metrics and the status call it (set by the composition root:
        the URI, numbered `` #2`` after the first sink of the same URI), else its URI."""
        return self._label if self._label is not None else self.uri

    @label.setter
    def label(self, value: str) -> None:
        self._label = value
        self.relabelled()

    def relabelled(self) -> None:  # noqa: B027 - optional hook
        """Called when :attr:`label` is set: a sink whose parts log under a name of their own renames them."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or open files; may raise SinkError (the pipeline retries)."""

    @abstractmethod
    async def send(self, batch: Sequence[Event]) -> None:
        """Take the whole batch or raise SinkError."""

    async def flush(self) -> None:  # noqa: B027 - optional hook
        """Make everything sent so far durable."""

    async def aclose(self) -> None:
        """Flush and release."""
        await self.flush()

    def take_dropped(self) -> list[tuple[Event, str]]:
        """Events of the batches sent so far that the sink had to leave out (e.g. larger than a server takes)
        or that its destination refused, with the reason, since the last call. The worker counts them as
        dropped by reason (those left out of a batch as it was sent are not counted as sent), and a guest that
        sent one is told it was dropped for good."""
        return []

    def take_duplicates(self) -> int:
        """Events sent since the last call that the destination said it already had (stored before, under the
        same message id): the worker counts them, so that status and /metrics show them."""
        return 0
