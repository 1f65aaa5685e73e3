"""The stdout sink on real pipes: a reader that stops reading blocks only the sink, never the event loop; a
reader that left is a send error; a line torn by a failed write stays one bad line."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import anyio
import pytest

from agent.errors import SinkError
from agent.model import Event
from agent.sinks.base import SinkContext
from agent.sinks.stdout import StdoutSink

pytestmark = pytest.mark.anyio


def events(a: int, b: int, size: int = 0) -> list[Event]:
    pad = b"x" * size
    return [Event(id=str(i), source="s", type="t", sequence=i, body=b'{"n":%d,"p":"%s"}' % (i, pad))
            for i in range(a, b)]


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


async def test_a_reader_that_does_not_read_holds_up_the_sink_and_nothing_else(pipe: tuple[int, int]) -> None:
    _r, w = pipe
    sink = StdoutSink("", None, SinkContext(), stream=os.fdopen(os.dup(w), "wb"))
    await sink.open()
    ticks = 0
    with anyio.move_on_after(1.0) as scope:  # 1 MiB into a pipe of 64 KiB nobody reads: the send waits
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.send, events(0, 1024, 1000))
            while True:
                await anyio.sleep(0.01)
                ticks += 1
    assert scope.cancelled_caught
    assert ticks >= 5  # the loop kept running meanwhile (a blocked loop would count none)
    await sink.aclose()


async def test_a_reader_that_left_is_a_send_error(pipe: tuple[int, int]) -> None:
    r, w = pipe
    sink = StdoutSink("", None, SinkContext(), stream=os.fdopen(os.dup(w), "wb"))
    await sink.open()
    await sink.send(events(0, 2))
    assert _read_all(r) == b'{"n":0,"p":""}\n{"n":1,"p":""}\n'
    os.close(r)
    with pytest.raises(SinkError, match="the reader closed the pipe"):
        await sink.send(events(2, 3))
    await sink.aclose()


async def test_a_line_torn_by_a_failed_write_is_ended_before_the_next_batch(pipe: tuple[int, int]) -> None:
    r, w = pipe
    fd = os.dup(w)
    sink = StdoutSink("", None, SinkContext(), stream=os.fdopen(fd, "wb", closefd=False))
    await sink.open()
    async with anyio.create_task_group() as tg:
        failed: list[BaseException] = []

        async def send() -> None:
            try:
                await sink.send(events(0, 1, 200_000))  # more than the pipe holds: part goes out, then EPIPE
            except SinkError as exc:
                failed.append(exc)

        tg.start_soon(send)
        with anyio.fail_after(20):  # until the writer thread has put part of the line into the pipe
            while not select.select([r], [], [], 0)[0]:
                await anyio.sleep(0.02)
        # read a little, not all: a reader draining the pipe as fast as the writer fills it could take the whole line
        assert len(os.read(r, 4096)) > 0
        os.close(r)
    assert failed
    # the same descriptor now leads to a fresh pipe (as after a reader's restart)
    r2, w2 = os.pipe()
    os.dup2(w2, fd)
    os.close(w2)
    await sink.send(events(1, 2))
    assert _read_all(r2) == b'\n{"n":1,"p":""}\n'
    await sink.aclose()
    os.close(r2)
    os.close(fd)


async def test_standard_output_closed_at_start_fails_open(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.sinks import stdout

    monkeypatch.setattr(stdout, "_CLOSED_AT_START", True)
    with pytest.raises(SinkError, match="closed when the agent started"):
        await StdoutSink("", None, SinkContext()).open()
