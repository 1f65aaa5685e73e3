"""The one-line live status on stderr (a terminal) or a startup line (anything else)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import anyio

from .pipeline.queue import SinkQueue
from .pipeline.stats import PipelineStats, sink_keys, sink_label
from .transport.uri import redact

__all__ = ["StatusLine"]


class _ClearLine(logging.Filter):
    """Erases the status line before a log record is written to the same terminal, so the two do not run together."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        self.stream.write("\r\x1b[K")
        return True


class StatusLine:
    """``queues``: each sink's URI and queue, in the configuration's order; a sink shows as its metrics label (its
    URI with any password masked; a second sink showing the same as ``URI #2``)."""

    def __init__(
        self,
        stats: PipelineStats,
        queues: Sequence[tuple[str, SinkQueue]],
        stream: TextIO | None = None,
        *,
        live: bool | None = None,
    ) -> None:
        self.stats = stats
        self.queues = list(queues)
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._last_signed = 0
        self._last_t = time.monotonic()

    def render(self) -> str:
        now = time.monotonic()
        rate = (self.stats.signed - self._last_signed) / max(now - self._last_t, 1e-9)
        self._last_signed, self._last_t = self.stats.signed, now
        errors = sum(p.failures for p in self.stats.probes.values())
        keys = sink_keys(uri for uri, _q in self.queues)
        sinks = " ".join(
            f"{sink_label(key)}[q={len(q)}{' DOWN' if not self.stats.sink(*key).healthy else ''}"
            f"{' drop=' + str(sum(q.dropped.values())) if q.dropped else ''}]"
            for key, (_uri, q) in zip(keys, self.queues, strict=True)
        )
        return f"hoststamp: {self.stats.signed} events ({rate:.1f}/s) | {sinks} | probe errors {errors}"

    def startup(self, probes: Sequence[str], sinks: Sequence[str], listeners: Sequence[str], keyid: str, *,
                as_log: bool = False) -> None:
        """The line that says the agent runs: printed, or a log record when logs are JSON (every line JSON)."""
        what = (
            f"running; probes={','.join(probes) or 'none'} sinks={','.join(sinks) or 'none'}"
            f"{' listeners=' + ','.join(listeners) if listeners else ''} keyid={keyid}"
        )
        if as_log:
            logging.getLogger("hoststamp").info("%s", what)
        else:
            print(f"hoststamp: {redact(what)}", file=self.stream, flush=True)

    async def run(self, period: float = 1.0) -> None:
        if not self.live:
            return
        clear = _ClearLine(self.stream)
        handlers = [h for h in logging.getLogger("hoststamp").handlers
                    if getattr(h, "stream", None) is self.stream]
        for h in handlers:
            h.addFilter(clear)
        try:
            while True:
                await anyio.sleep(period)
                self.stream.write("\r\x1b[K" + self.render())
                self.stream.flush()
        finally:
            for h in handlers:
                h.removeFilter(clear)
            self.stream.write("\n")
            self.stream.flush()
