"""Runs one probe on its schedule: interval, jitter, deadline, failures as data."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio

from ..config import ProbeConfig
from ..errors import AgentError
from ..model import Reading
from ..probes.base import Probe
from .stats import ProbeStats

__all__ = ["ProbeRunner"]

log = logging.getLogger("hoststamp.probe")

Submit = Callable[[Sequence[Reading]], Awaitable[None]]


class ProbeRunner:
    """Collect, time, and hand over; a failure or a timeout becomes an error reading."""

    def __init__(self, probe: Probe, cfg: ProbeConfig, submit: Submit, stats: ProbeStats) -> None:
        self.probe = probe
        self.cfg = cfg
        self.submit = submit
        self.stats = stats

    async def collect_once(self) -> list[Reading]:
        start = time.monotonic()
        self.stats.runs += 1
        try:
            with anyio.fail_after(self.cfg.timeout):
                readings = list(await self.probe.collect())
            self.stats.last_success = True
            self.stats.last_error = None
        except TimeoutError:
            readings = [self.probe.error_reading(f"timed out after {self.cfg.timeout:g} s")]
            self._failed(readings[0].error)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # any failure of one probe is data, never the end of the agent
            readings = [self.probe.error_reading(exc)]
            self._failed(readings[0].error)
            if not isinstance(exc, (AgentError, OSError)):  # not a foreseen failure: a bug, worth a traceback
                log.exception("probe %s crashed", self.cfg.name)
        self.stats.last_duration = time.monotonic() - start
        self.stats.readings += len(readings)
        return readings

    def _failed(self, error: str | None) -> None:
        self.stats.failures += 1
        self.stats.last_success = False
        if error != self.stats.last_error:
            log.warning("probe %s: %s", self.cfg.name, error)
        self.stats.last_error = error

    async def run_once(self) -> None:
        await self.submit(await self.collect_once())

    async def run(self) -> None:
        """Forever: one round per interval (start to start), each start delayed by up to jitter·interval."""
        interval = self.cfg.interval
        next_start = time.monotonic() + random.uniform(0, self.cfg.jitter * interval)
        while True:
            delay = next_start - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            started = time.monotonic()
            await self.run_once()
            next_start = started + interval + random.uniform(0, self.cfg.jitter * interval)
            if next_start < time.monotonic():  # a round overran: do not try to catch up
                next_start = time.monotonic()
