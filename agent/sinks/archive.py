"""``archive:DIR`` — the tamper-evident archive (see ``docs/archive.md``).

Events are appended to NDJSON segments under ``DIR``, committed to an RFC 6962
Merkle tree and sealed by checkpoints signed with the host key
(``SinkContext.key``). All file work runs on one worker thread of the sink's
own, so the event loop never waits for the disk; ``send`` returns once the
batch is written (and synced, under ``fsync = "batch"``). A background tick
signs interval checkpoints and applies age rotation and retention. ``flush``
syncs; ``aclose`` seals the tail with a last checkpoint and releases the lock.

An archive removed while it is written (``rm -rf DIR``) is found at the next
``send`` or ``flush`` (an ``fstat`` of the lock and the open events file: no
link left). That call fails with a :class:`~agent.errors.SinkError` (counted,
logged, retried) after a new archive was started in ``DIR``, as a start would,
beginning with the events taken since the last ``flush``: nothing the pipeline
was not told was made durable is lost with the removed files.
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
        #: the bodies written since the last flush: written again into a new archive if this one is removed
        self._unsynced: list[bytes] = []

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
                        self.label, cut.file, cut.offset, cut.length)
        if w.last_keyid is not None and w.last_keyid != self.ctx.key.keyid:
            log.warning("%s: its last records were signed with key %s, and this agent signs with %s: verifying "
                        "the archive takes both public keys (verify --pub OLD.pub --pub NEW.pub)", self.label,
                        w.last_keyid[:16], self.ctx.key.keyid[:16])
        if self._unsynced:  # taken by an archive that was removed before they were flushed
            try:
                await self._run(w.append, list(self._unsynced))
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._run(w.close)
                raise
        self._writer = w
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_loop(), name=f"{self.label} tick")
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
                    if await self._run(w.removed) is not None:
                        continue  # nothing more to seal there: the next send or flush starts a new archive
                    await self._run(w.tick)
                except SinkError as exc:
                    log.warning("%s: %s", self.label, exc)

    async def _writable(self) -> ArchiveWriter:
        """The writer, opened if need be. One whose archive was removed is let go, and a new archive started in
        its place; then SinkError (the caller's batch, or flush, is retried on the new one)."""
        w = self._writer
        if w is None:
            return await self._open_locked()
        why = await self._run(w.removed)
        if why is None:
            return w
        self._writer = None
        with contextlib.suppress(Exception):  # it seals nothing more: it only lets go of the unlinked files
            await self._run(w.close)
        try:
            await self._open_locked()
        except SinkError as exc:
            raise SinkError(f"{self.path}: {why}; a new archive cannot be started there yet: {exc}") from None
        raise SinkError(f"{self.path}: {why}; a new archive was started there, beginning with the "
                        f"{len(self._unsynced)} events taken since the last flush")

    async def send(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        bodies = [e.body for e in batch]
        async with self._lock:
            w = await self._writable()
            await self._run(w.append, bodies)
            self._unsynced.extend(bodies)

    async def flush(self) -> None:
        async with self._lock:
            if self._writer is None and not self._unsynced:
                return
            await self._run((await self._writable()).sync)
            self._unsynced.clear()

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
