"""Counters the pipeline keeps about itself: read by the status line and by /metrics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import redact

__all__ = ["PipelineStats", "ProbeStats", "SinkKey", "SinkStats", "sink_keys", "sink_label"]

#: which sink a set of counters is, the same as what its label shows: its URI with any password masked, and which
#: of the sinks showing that it is (1 for the first)
SinkKey = tuple[str, int]


def sink_label(key: SinkKey) -> str:
    """What metrics and the status call the sink: the masked URI, numbered (`` #2``) after the first."""
    shown, nth = key
    return shown if nth == 1 else f"{shown} #{nth}"


def sink_keys(uris: Iterable[str]) -> list[SinkKey]:
    """The key of each of a configuration's sinks, in order: ``(shown, n)`` for the nth sink whose URI shows as
    ``shown`` once its password is masked (same URIs, or URIs that differ only in their passwords), so that
    such sinks count apart, each label is another's, and a reload keeps each label's counters: a label's
    series never goes back, whichever of those sinks it names after a reload."""
    seen: set[str] = set()
    out = []
    for uri in uris:
        shown, nth = redact(uri), 1
        while sink_label((shown, nth)) in seen:  # (a URI may itself end as a numbered label does)
            nth += 1
        seen.add(sink_label((shown, nth)))
        out.append((shown, nth))
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
        """The counters of the ``nth`` sink showing as this URI, its password masked (see :func:`sink_keys`)."""
        key = (redact(uri), nth)
        s = self.sinks.get(key)
        if s is None:
            s = self.sinks[key] = SinkStats()
        return s
