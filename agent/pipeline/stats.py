"""Counters the pipeline keeps about itself: read by the status line and by /metrics."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import redact

__all__ = ["PipelineStats", "ProbeStats", "SinkKey", "SinkStats", "label_key", "sink_keys", "sink_label"]

#: which sink a set of counters is, the same as what its label shows: its URI with any password masked, and which
#: of the sinks showing that it is (1 for the first). One label, one key: see :func:`sink_keys`
SinkKey = tuple[str, int]

#: a label's numbering, `` #N`` with N from 2 on, as :func:`sink_label` writes it
_NUMBERED = re.compile(r"(.*) #([2-9]|[1-9][0-9]+)", re.DOTALL)


def sink_label(key: SinkKey) -> str:
    """What metrics and the status call the sink: the masked URI, numbered (`` #2``) after the first."""
    shown, nth = key
    return shown if nth == 1 else f"{shown} #{nth}"


def label_key(label: str) -> SinkKey:
    """The one key whose :func:`sink_label` is ``label``: ``("URI", 2)`` for ``"URI #2"``, whether that label names
    the second sink showing as ``URI`` or a sink whose URI itself ends in `` #2``."""
    m = _NUMBERED.fullmatch(label)
    return (m.group(1), int(m.group(2))) if m is not None else (label, 1)


def sink_keys(uris: Iterable[str]) -> list[SinkKey]:
    """The key of each of a configuration's sinks, in order.

    The nth sink whose URI shows as ``shown`` once its password is masked (same URIs, or URIs that differ only in
    their passwords) is labelled ``shown #n`` from the second on, numbered on past any label an earlier sink has
    (a URI may itself end as a numbered label does), so that every label is another's. The key is the label's
    own (:func:`label_key`): two sinks labelled alike, in two configurations, have one key, and a reload keeps each
    label's counters: a label's series never goes back, whichever sink it names after a reload."""
    seen: set[str] = set()
    out = []
    for uri in uris:
        shown, nth = redact(uri), 1
        while sink_label((shown, nth)) in seen:
            nth += 1
        label = sink_label((shown, nth))
        seen.add(label)
        out.append(label_key(label))
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
    #: spooled events counted as sent and never confirmed when the sink's reader stopped: a reload's next reader
    #: reads them again and counts them again (enqueued, then sent)
    resent: int = 0
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
