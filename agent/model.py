"""The data that flows through the pipeline: readings in, signed events out."""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "Reading", "event_type"]


def event_type(domain: str, probe: str, kind: str = "") -> str:
    """``io.hoststamp.<domain>.v1.<probe>[.<kind>]``."""
    base = f"io.hoststamp.{domain}.v1.{probe}"
    return f"{base}.{kind}" if kind else base


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement made by a probe, before it is stamped and signed.

    ``probe`` is the registry name of the probe family (``cgroup``); ``kind``
    names a sub-stream (``exit`` for the taskstats exit stream, ``change`` for
    watch-driven readings) and becomes a suffix of the event type. ``output``
    is the parsed result, a JSON-compatible mapping; ``inputs`` lists what was
    read (paths, netlink families). A failed reading carries ``error`` and an
    empty ``output``.
    """

    probe: str
    subject: str
    output: Mapping[str, Any]
    inputs: tuple[str, ...] = ()
    probe_source: str = ""
    kind: str = ""
    error: str | None = None
    time: float = field(default_factory=_time.time)
    domain: str = "host"

    @property
    def type(self) -> str:
        return event_type(self.domain, self.probe, self.kind)

    def data(self) -> dict[str, Any]:
        """The CloudEvent ``data`` object for this reading."""
        d: dict[str, Any] = {
            "probeSource": self.probe_source,
            "inputs": list(self.inputs),
            "output": dict(self.output),
        }
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass(slots=True)
class Event:
    """A signed CloudEvent, ready for sinks.

    ``body`` is the structured-mode JSON of the event (UTF-8, no trailing
    newline): exactly the bytes a file sink writes as one line or a socket sink
    sends as one frame. ``sequence`` is the host stamp's per-source counter.
    Not frozen only because a frozen dataclass costs four times as much to
    make, and one is made per event: treat it as immutable.
    """

    id: str
    source: str
    type: str
    sequence: int
    body: bytes
