"""Counters the pipeline keeps about itself: read by the status line and by /metrics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["PipelineStats", "ProbeStats", "SinkKey", "SinkStats", "sink_keys"]

#: which sink a set of counters is: its URI, and which of the sinks with that URI it is (1 for the first)
SinkKey = tuple[str, int]


def sink_keys(uris: Iterable[str]) -> list[SinkKey]:
    """The key of each of a configuration's sinks, in order: ``(uri, n)`` for the nth sink with that URI, so
    that two sinks with the same URI count apart, and a reload keeps each one's counters."""
    seen: dict[str, int] = {}
    out = []
    for uri in uris:
        seen[uri] = seen.get(uri, 0) + 1
        out.append((uri, seen[uri]))
    return out


@dataclass(slots=True)
class ProbeStats:
    runs: int = 0
    failures: int = 0
    readings: int = 0
    last_duration: float = 0.0
    last_success: bool = True
    last_error: str | None = None


@dataclass(slots=True)
class SinkStats:
    sent: int = 0
    batches: int = 0
    send_errors: int = 0
    last_error: str | None = None
    healthy: bool = True
    #: events sent that the destination said it had already (a NATS server's duplicate ack): sent again after
    #: a lost ack or a restart, stored once
    duplicates: int = 0
    #: events counted as sent that a reload handed to the reloaded sink to send again: the next ones it sends
    #: are not counted twice
    recount: int = 0
    #: events dropped by reason (``queue_full``, ``evicted``, ``spool_full``, ``closed``): the queue's own counters
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class PipelineStats:
    signed: int = 0
    #: readings that could not become events (unserializable data), by probe
    rejected: int = 0
    probes: dict[str, ProbeStats] = field(default_factory=dict)
    #: by :data:`SinkKey`
    sinks: dict[SinkKey, SinkStats] = field(default_factory=dict)

    def probe(self, name: str) -> ProbeStats:
        s = self.probes.get(name)
        if s is None:
            s = self.probes[name] = ProbeStats()
        return s

    def sink(self, uri: str, nth: int = 1) -> SinkStats:
        """The counters of the ``nth`` sink with this URI (see :func:`sink_keys`)."""
        s = self.sinks.get((uri, nth))
        if s is None:
            s = self.sinks[(uri, nth)] = SinkStats()
        return s
