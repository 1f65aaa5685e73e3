"""The pipeline proper: stamp and sign once, then fan out to every sink's queue."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..model import Event, Reading
from .queue import Receipt, SinkQueue
from .stamp import Stamper
from .stats import PipelineStats

__all__ = ["Pipeline"]

log = logging.getLogger("hoststamp.pipeline")


class Pipeline:
    """Readings and guest events in; signed events into each sink's bounded queue."""

    def __init__(self, stamper: Stamper, queues: Sequence[SinkQueue], stats: PipelineStats | None = None) -> None:
        self.stamper = stamper
        self.queues = list(queues)
        self.stats = stats if stats is not None else PipelineStats()

    def _stamp(self, reading: Reading) -> Event | None:
        try:
            return self.stamper.stamp(reading)
        except (ValueError, TypeError) as exc:
            # data a probe produced that JSON cannot carry: becomes an error reading
            self.stats.rejected += 1
            log.error("probe %s produced unserializable data: %s", reading.probe, exc)
            return self.stamper.stamp(
                Reading(probe=reading.probe, subject=reading.subject, output={}, inputs=reading.inputs,
                        probe_source=reading.probe_source, kind=reading.kind,
                        error=f"unserializable reading: {exc}", time=reading.time, domain=reading.domain)
            )

    async def submit(self, reading: Reading) -> Event | None:
        """Stamp, sign and enqueue one reading on every sink."""
        event = self._stamp(reading)
        if event is None:
            return None
        self.stats.signed += 1
        for q in self.queues:
            await q.put(event)
        return event

    async def submit_many(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            await self.submit(r)

    async def submit_guest(self, event: Mapping[str, Any], hostpeer: str) -> Receipt:
        """Stamp a guest's event and enqueue it; the receipt completes when every sink took it."""
        signed = self.stamper.stamp_guest(event, hostpeer)
        self.stats.signed += 1
        receipt = Receipt(len(self.queues))
        for q in self.queues:
            await q.put(signed, receipt)
        return receipt

    def close(self) -> None:
        for q in self.queues:
            q.close()
