"""``archive:DIR`` — the tamper-evident archive (see ``docs/archive.md``).

Events are appended to NDJSON segments under ``DIR``, committed to an RFC 6962
Merkle tree and sealed by checkpoints signed with the host key
(``SinkContext.key``). All file work runs on one worker thread of the sink's
own, so the event loop never waits for the disk; ``send`` returns once the
batch is written (and synced, under ``fsync = "batch"``). A background tick
signs interval checkpoints and applies age rotation and retention. ``flush``
syncs; ``aclose`` seals the tail with a last checkpoint and releases the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..archive.policy import ArchiveOptions
from ..archive.writer import ArchiveWriter
from ..errors import SinkError
from ..model import Event
from .base import Sink, SinkContext
from .registry import register

__all__ = ["ArchiveSink"]

log = logging.getLogger("hoststamp.sink.archive")
T = TypeVar("T")


@register
class ArchiveSink(Sink):
    scheme = "archive"
    Options = ArchiveOptions

    def __init__(self, target: str, options: Any, ctx: SinkContext) -> None:
        super().__init__(target, options if options is not None else ArchiveOptions(), ctx)
        if not target:
            raise SinkError("archive: needs a directory (archive:DIR)")
        self.path = Path(target)
        self._writer: ArchiveWriter | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def writer(self) -> ArchiveWriter | None:
        return self._writer

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"hoststamp-archive:{self.path}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        async with self._lock:
            await self._open_locked()

    async def _open_locked(self) -> ArchiveWriter:
        if self._writer is not None:
            return self._writer
        if self.ctx.key is None:
            raise SinkError(f"{self.uri}: the archive needs the host signing key")
        witness = None
        if self.ctx.state_dir is not None:  # outside the archive: what this host last wrote there
            try:
                where = str(Path(self.path).resolve())
            except (OSError, RuntimeError):  # a loop of links: the archive's open says what is wrong
                where = os.path.abspath(self.path)
            name = hashlib.sha256(where.encode()).hexdigest()[:16]
            witness = Path(self.ctx.state_dir) / "archive-witness" / f"{name}.json"
        w = ArchiveWriter(self.path, self.ctx.key, self.options, witness=witness)
        await self._run(w.open)
        for cut in w.cuts:
            log.warning("%s: cut a torn last line from %s at offset %d (%d bytes); recorded in the archive",
                        self.uri, cut.file, cut.offset, cut.length)
        self._writer = w
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_loop(), name=f"{self.uri} tick")
        return w

    async def _tick_loop(self) -> None:
        period = min(1.0, self.options.checkpoint_interval / 2)
        while True:
            await asyncio.sleep(period)
            async with self._lock:
                w = self._writer
                if w is None:
                    continue
                try:
                    await self._run(w.tick)
                except SinkError as exc:
                    log.warning("%s: %s", self.uri, exc)

    async def send(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        bodies = [e.body for e in batch]
        async with self._lock:
            w = await self._open_locked()
            await self._run(w.append, bodies)

    async def flush(self) -> None:
        async with self._lock:
            if self._writer is not None:
                await self._run(self._writer.sync)

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        try:
            async with self._lock:
                if self._writer is not None:
                    await self._run(self._writer.close)
        finally:
            self._writer = None
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
