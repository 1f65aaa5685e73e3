"""``file:PATH`` — NDJSON appended to a file, batched.

Two writers, chosen by ``writer``:

* ``thread`` (default): one long-lived writer thread. ``send`` hands the joined
  batch over without waiting for the disk; ``flush`` waits for the thread to
  catch up and fsyncs. A write error keeps the unwritten bytes, in order, and
  is raised by the next ``send``/``flush`` so the pipeline retries.
* ``aiofiles``: ``await f.write(batch)`` per batch: one executor hop per batch.

Measured in ``benchmarks/bench_file_sink.py`` (see RESULTS.md): with 512-event
batches both stay far below the cost of signing, and the thread writer is the
faster of the two because the event loop never waits for a hop; aiofiles'
``write`` awaits a thread-pool round trip per batch (per line, it would cost
more than the signature). So ``thread`` is the default and ``aiofiles`` stays
for hosts where a dedicated thread per sink is unwanted.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import stat
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiofiles
from aiofiles.threadpool.binary import AsyncBufferedIOBase

from ..errors import SinkError
from ..model import Event
from .base import Sink, SinkContext
from .registry import register

__all__ = ["FileOptions", "FileSink"]

log = logging.getLogger("hoststamp.sink.file")


@dataclass(frozen=True, slots=True)
class FileOptions:
    writer: Literal["thread", "aiofiles"] = "thread"
    #: fsync on every pipeline flush (about once a second while busy, and when idle)
    fsync: bool = True


class _WriterThread:
    """Appends byte chunks to a file in order on its own thread."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        # opened here, on the caller's thread, so that a bad path fails open() at once
        # not blocking: a FIFO nobody reads would hold the open (and the event loop) until a reader came; it is
        # refused instead (ENXIO) and the open retried like any sink's
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o640)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise OSError(exc.errno, "a FIFO that nothing reads (yet)", str(path)) from None
            raise
        os.set_blocking(self._fd, True)  # the writes wait on this thread, not the loop
        if not _regular(self._fd):  # a FIFO, /dev/stdout, /dev/null: written through, nothing to make durable
            self.fsync = False
        self._q: queue.SimpleQueue[bytes | Future[None] | None] = queue.SimpleQueue()
        self._pending: deque[bytes] = deque()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name=f"hoststamp-file:{path}", daemon=True)
        self._thread.start()

    @property
    def error(self) -> OSError | None:
        return self._error

    def submit(self, data: bytes) -> None:
        self._q.put(data)

    def barrier(self) -> Future[None]:
        fut: Future[None] = Future()
        self._q.put(fut)
        return fut

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)

    def _drain_pending(self) -> None:
        while self._pending:
            chunk = self._pending[0]
            n = os.write(self._fd, chunk)
            if n < len(chunk):
                self._pending[0] = chunk[n:]
                continue
            self._pending.popleft()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                break
            if isinstance(item, bytes):
                self._pending.append(item)
                if self._error is not None:
                    continue  # keep order: nothing new is written before the failed bytes
            try:
                self._drain_pending()
                if isinstance(item, Future) and self.fsync:
                    os.fsync(self._fd)
                self._error = None
                if isinstance(item, Future):
                    item.set_result(None)
            except OSError as exc:
                self._error = exc
                if isinstance(item, Future):
                    item.set_exception(exc)
        os.close(self._fd)


def _regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _ends_torn(path: Path) -> bool:
    """Whether the file at ``path`` is not empty and its last byte is not a newline."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        size = os.fstat(fd).st_size
        return size > 0 and os.pread(fd, 1, size - 1) not in (b"\n", b"")
    finally:
        os.close(fd)


@register
class FileSink(Sink):
    scheme = "file"
    Options = FileOptions

    def __init__(self, target: str, options: Any, ctx: SinkContext) -> None:
        super().__init__(target, options if options is not None else FileOptions(), ctx)
        if not target:
            raise SinkError("file: needs a path (file:PATH)")
        self.path = Path(target)
        self._thread: _WriterThread | None = None
        self._af: AsyncBufferedIOBase | None = None
        self._torn = False

    async def open(self) -> None:
        try:
            if self.options.writer == "thread":
                self._thread = _WriterThread(self.path, self.options.fsync)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._af = await aiofiles.open(self.path, "ab")
            # a writer that died mid-line (here or anywhere) left a torn last line: the first event written now
            # starts a line of its own, so that it stays readable and the torn line stays one bad line
            self._torn = _ends_torn(self.path)
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc
        if self._torn:
            log.warning("file %s ends in a line without a newline (a torn write): the next event starts a new line",
                        self.path)

    async def send(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        data = b"\n".join([e.body for e in batch]) + b"\n"
        if self._torn:
            data = b"\n" + data
            self._torn = False
        if self._thread is not None:
            if self._thread.error is not None:
                await self.flush()  # retries what failed, raises if it still fails
            self._thread.submit(data)
        elif self._af is not None:
            try:
                await self._af.write(data)
            except OSError as exc:
                raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc
        else:
            raise SinkError(f"{self.path}: not open")

    async def flush(self) -> None:
        try:
            if self._thread is not None:
                await asyncio.wrap_future(self._thread.barrier())
            elif self._af is not None:
                await self._af.flush()
                if self.options.fsync and _regular(self._af.fileno()):
                    await asyncio.get_running_loop().run_in_executor(None, os.fsync, self._af.fileno())
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc

    async def aclose(self) -> None:
        try:
            await self.flush()
        finally:
            if self._thread is not None:
                self._thread.stop()
                self._thread = None
            if self._af is not None:
                af, self._af = self._af, None
                try:
                    await af.close()
                except OSError as exc:
                    raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc
