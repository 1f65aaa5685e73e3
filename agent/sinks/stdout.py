"""``stdout:`` — NDJSON on standard output, one event per line.

Standard output is whatever the agent was started with: a terminal, a file,
or a pipe to a reader that may stop reading. A write to a full pipe blocks,
so writes never happen on the event loop's thread: a writer thread of the
sink's own takes each batch (one hop per batch) and the loop awaits its
answer. It is a daemon thread, so a reader that never reads again holds up
neither the other sinks nor the agent's exit (a SIGTERM drains within
``drain_timeout`` and the sink's close timeout, and what stdout did not take
is reported as not confirmed).

A batch is written with ``os.write`` until all of it is out. When a write
fails part-way (a full disk behind a redirect), the next batch starts with a
newline, so that the torn line stays one bad line and the events after it
stay readable. A reader that closed the pipe (``EPIPE``) is a send failure
like any other: retried, and counted. Standard output closed when the agent
started (``>&-``) is an error at open, never a write into whatever file
later took its descriptor (see :func:`agent.cli.main`, which puts
``/dev/null`` there and tells this module).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Sequence
from typing import BinaryIO

from ..errors import SinkError
from ..model import Event
from .base import Sink, SinkContext
from .registry import register

__all__ = ["StdoutSink", "stdout_closed_at_start"]

#: fd 1 was not open when the process started (set by the command line before anything is opened)
_CLOSED_AT_START = False


def stdout_closed_at_start(closed: bool = True) -> None:
    """Tell the sink that fd 1 was closed at start (and now holds ``/dev/null``)."""
    global _CLOSED_AT_START
    _CLOSED_AT_START = closed


_Job = tuple[bytes, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class _Writer:
    """A daemon thread that writes whole buffers to ``fd`` and answers each on its event loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: a write failed part-way: the last line written is torn
        self.torn = False

    async def write(self, data: bytes) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stdout writer", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._jobs.put((data, loop, fut))
        await fut

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            data, loop, fut = job
            error: OSError | None = None
            if self.torn:
                data = b"\n" + data
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.fd, view):]
                self.torn = False
            except OSError as exc:
                error = exc
                self.torn = len(view) < len(data)  # part of it went out
            try:
                loop.call_soon_threadsafe(_answer, fut, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass


def _answer(fut: asyncio.Future[None], error: OSError | None) -> None:
    if fut.done():  # the sender was cancelled meanwhile
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


@register
class StdoutSink(Sink):
    scheme = "stdout"

    def __init__(self, target: str, options: object, ctx: SinkContext, stream: BinaryIO | None = None) -> None:
        """``stream``: write there instead of fd 1 (its ``fileno()``)."""
        if target:
            raise SinkError(f"stdout: takes nothing after the colon (got stdout:{target})")
        super().__init__(target, options, ctx)
        self._stream = stream
        self._writer: _Writer | None = None

    async def open(self) -> None:
        if self._stream is None and _CLOSED_AT_START:
            raise SinkError("stdout: standard output was closed when the agent started")
        if self._writer is None:
            self._writer = _Writer(self._stream.fileno() if self._stream is not None else 1)

    async def send(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        if self._writer is None:
            await self.open()
        assert self._writer is not None
        try:
            await self._writer.write(b"".join([e.body + b"\n" for e in batch]))
        except BrokenPipeError:
            raise SinkError("stdout: the reader closed the pipe") from None
        except OSError as exc:
            raise SinkError(f"stdout: {exc.strerror or exc}") from None

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
