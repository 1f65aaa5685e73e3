"""``stdout:`` — NDJSON on standard output, one event per line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import BinaryIO

from ..errors import SinkError
from ..model import Event
from .base import Sink, SinkContext
from .registry import register

__all__ = ["StdoutSink"]


@register
class StdoutSink(Sink):
    scheme = "stdout"

    def __init__(self, target: str, options: object, ctx: SinkContext, stream: BinaryIO | None = None) -> None:
        if target:
            raise SinkError(f"stdout: takes nothing after the colon (got stdout:{target})")
        super().__init__(target, options, ctx)
        self._stream = stream

    @property
    def stream(self) -> BinaryIO:
        return self._stream if self._stream is not None else sys.stdout.buffer

    async def send(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        try:
            self.stream.write(b"\n".join(e.body for e in batch) + b"\n")
        except (OSError, ValueError) as exc:
            raise SinkError(f"stdout: {exc}") from exc

    async def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError) as exc:
            raise SinkError(f"stdout: {exc}") from exc
