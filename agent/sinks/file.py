"""``file:PATH`` — NDJSON appended to a file, batched.

Two writers, chosen by ``writer``:

* ``thread`` (default): one long-lived writer thread. ``send`` hands the joined
  batch over and waits (without blocking the event loop) until it is written,
  not synced; ``flush`` has the thread fsync.
* ``aiofiles``: ``await f.write(batch)`` per batch, unbuffered: one executor hop
  per batch.

Either way a batch is taken (and counted as sent) only once the kernel took all
of its bytes: a write that fails (ENOSPC, EIO) is that ``send``'s
:class:`~agent.errors.SinkError`. The bytes it left unwritten are kept, in
order, and written first by the next ``send`` or ``flush``; the retried batch
itself is not written twice.

Measured in ``benchmarks/bench_file_sink.py`` (see RESULTS.md): with 512-event
batches both stay far below the cost of signing, and the thread writer is the
faster of the two: its hop is a wake-up of a thread that is already there;
aiofiles' ``write`` is a thread-pool round trip per batch (per line, it would
cost more than the signature). So ``thread`` is the default and ``aiofiles`` stays
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
from aiofiles.threadpool.binary import AsyncFileIO

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
    """Appends byte chunks to a file in order on its own thread; each chunk's future says when it is written."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        make_parent(path)
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
        #: (bytes to append, future, whether to fsync after), or None to stop
        self._q: queue.SimpleQueue[tuple[bytes, Future[None], bool] | None] = queue.SimpleQueue()
        #: bytes not written yet, in order: what a failed write left, then what came after it
        self._pending: deque[bytes] = deque()
        self._thread = threading.Thread(target=self._run, name=f"hoststamp-file:{path}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> Future[None]:
        """Append ``data`` after anything still unwritten; done once all of it is written (or failing)."""
        return self._put(data, False)

    def barrier(self) -> Future[None]:
        """Done once everything handed over is written, and synced (fsync)."""
        return self._put(b"", self.fsync)

    def _put(self, data: bytes, fsync: bool) -> Future[None]:
        fut: Future[None] = Future()
        self._q.put((data, fut, fsync))
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
            data, fut, fsync = item
            waited = fut.set_running_or_notify_cancel()  # False: whoever waited went away (its bytes still go)
            if data:
                self._pending.append(data)  # after what a failed write left: nothing new goes before it
            try:
                self._drain_pending()
                if fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                if waited:
                    fut.set_exception(exc)
            else:
                if waited:
                    fut.set_result(None)
        os.close(self._fd)


def make_parent(path: Path) -> None:
    """Create the directories above ``path``; a component in the way that is not a directory is named:
    ``OSError(ENOTDIR, "Not a directory (C is a regular file)")``, not ``mkdir``'s ``File exists``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        for part in (*reversed(path.parent.parents), path.parent):
            try:
                mode = part.stat().st_mode
            except OSError:
                break
            if not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, f"Not a directory ({part} is a {_kind(mode)})", str(path)) from None
        raise exc from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "file"


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
        self._af: AsyncFileIO | None = None
        self._torn = False
        #: the aiofiles writer's bytes a failed write left unwritten (the thread writer keeps its own)
        self._rest = b""
        #: the batch whose write failed (its bytes, as built), until a send or flush wrote what it left
        self._failed: bytes | None = None

    async def open(self) -> None:
        try:
            if self.options.writer == "thread":
                self._thread = _WriterThread(self.path, self.options.fsync)
            else:
                make_parent(self.path)
                # unbuffered: a write that fails fails here, not at a later flush after the batch counted as sent
                self._af = await aiofiles.open(self.path, "ab", buffering=0)
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
        if self._failed is not None:
            # what the failed write left is written first; then the batch that failed is written already
            await self._write(b"")
            again, self._failed = self._failed == data, None
            if again:
                return
        out = data
        if self._torn:
            out = b"\n" + data
            self._torn = False
        try:
            await self._write(out)
        except SinkError:
            self._failed = data
            raise

    async def _write(self, data: bytes) -> None:
        """Write ``data`` after what an earlier failed write left; a failure keeps what it did not write."""
        try:
            if self._thread is not None:
                await asyncio.wrap_future(self._thread.write(data))
            elif self._af is not None:
                self._rest += data
                while self._rest:
                    n = await self._af.write(self._rest)
                    self._rest = self._rest[n:]
            else:
                raise SinkError(f"{self.path}: not open")
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc

    async def flush(self) -> None:
        try:
            if self._thread is not None:
                await asyncio.wrap_future(self._thread.barrier())
            elif self._af is not None:
                await self._write(b"")
                if self.options.fsync and _regular(self._af.fileno()):
                    await asyncio.get_running_loop().run_in_executor(None, os.fsync, self._af.fileno())
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc
        self._failed = None  # what it left is written: a batch sent now is a new one

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
