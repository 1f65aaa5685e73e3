"""The file sink: both writers write the same lines; a failing disk keeps bytes and order."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from agent.errors import SinkError
from agent.model import Event
from agent.sinks.base import SinkContext
from agent.sinks.file import FileOptions, FileSink


def events(a: int, b: int) -> list[Event]:
    return [Event(id=str(i), source="s", type="t", sequence=i, body=b'{"n":%d}' % i) for i in range(a, b)]


@pytest.mark.anyio
@pytest.mark.parametrize("writer", ["thread", "aiofiles"])
async def test_writers_append_ndjson(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "sub" / "ev.ndjson"
    sink = FileSink(str(path), FileOptions(writer=writer), SinkContext())  # type: ignore[arg-type]
    await sink.open()
    assert path.exists()
    await sink.send(events(0, 3))
    await sink.send(events(3, 5))
    await sink.aclose()
    assert path.read_bytes() == b"".join(b'{"n":%d}\n' % i for i in range(5))


@pytest.mark.anyio
async def test_bad_path_fails_open(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    sink = FileSink(str(tmp_path / "file" / "below"), FileOptions(), SinkContext())
    with pytest.raises(SinkError):
        await sink.open()


@pytest.mark.anyio
@pytest.mark.parametrize("writer", ["thread", "aiofiles"])
async def test_full_disk_is_a_sink_error(writer: str) -> None:
    # /dev/full: every write fails with ENOSPC, like a full disk
    sink = FileSink("/dev/full", FileOptions(writer=writer, fsync=False), SinkContext())  # type: ignore[arg-type]
    await sink.open()
    with pytest.raises(SinkError, match="space"):
        await sink.send(events(0, 2))
        await sink.flush()
    with pytest.raises(SinkError):
        await sink.flush()  # still failing: the bytes are kept, not dropped
    with pytest.raises(SinkError):
        await sink.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("writer", ["thread", "aiofiles"])
async def test_a_torn_last_line_is_ended_before_new_events(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "ev.ndjson"
    path.write_bytes(b'{"n":0}\n{"n":1,"cut')  # a writer died mid-line
    sink = FileSink(str(path), FileOptions(writer=writer), SinkContext())  # type: ignore[arg-type]
    await sink.open()
    await sink.send(events(2, 4))
    await sink.send(events(4, 5))
    await sink.aclose()
    assert path.read_bytes().split(b"\n") == [b'{"n":0}', b'{"n":1,"cut', b'{"n":2}', b'{"n":3}', b'{"n":4}', b""]
    # a whole last line, or an empty file, gets nothing added
    for before in (b"", b'{"n":0}\n'):
        path.write_bytes(before)
        sink = FileSink(str(path), FileOptions(writer=writer), SinkContext())  # type: ignore[arg-type]
        await sink.open()
        await sink.send(events(1, 2))
        await sink.aclose()
        assert path.read_bytes() == before + b'{"n":1}\n'


@pytest.mark.anyio
@pytest.mark.parametrize("writer", ["thread", "aiofiles"])
async def test_a_fifo_or_a_device_is_written_through_without_fsync(tmp_path: Path, writer: str) -> None:
    """``file:/dev/stdout``, ``file:/dev/null`` or a named pipe: fsync has nothing to make durable there (and
    fails with EINVAL), so a flush is the write itself."""
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    for target in ("/dev/null", str(fifo)):
        sink = FileSink(target, FileOptions(writer=writer), SinkContext())  # type: ignore[arg-type]
        while True:  # a FIFO is opened once its reader (the thread above) has it open
            try:
                await sink.open()
                break
            except SinkError:
                await anyio.sleep(0.01)
        await sink.send(events(0, 3))
        await sink.flush()
        await sink.aclose()
    reader.join(10)
    assert got == [b'{"n":0}\n{"n":1}\n{"n":2}\n']


@pytest.mark.anyio
async def test_a_fifo_nothing_reads_is_a_sink_error_not_a_blocked_open(tmp_path: Path) -> None:
    """Opening a FIFO for writing waits for a reader: on the event loop's thread that froze the agent at start.
    It is refused at once instead, saying why, and the worker retries the open as for any sink."""
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    sink = FileSink(str(fifo), FileOptions(), SinkContext())
    with anyio.fail_after(10), pytest.raises(SinkError, match="a FIFO that nothing reads"):
        await sink.open()
