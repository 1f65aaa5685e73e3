"""Counters the pipeline keeps about itself: read by the status line and by /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PipelineStats", "ProbeStats", "SinkStats"]


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
    sinks: dict[str, SinkStats] = field(default_factory=dict)

    def probe(self, name: str) -> ProbeStats:
        s = self.probes.get(name)
        if s is None:
            s = self.probes[name] = ProbeStats()
        return s

    def sink(self, uri: str) -> SinkStats:
        s = self.sinks.get(uri)
        if s is None:
            s = self.sinks[uri] = SinkStats()
        return s
