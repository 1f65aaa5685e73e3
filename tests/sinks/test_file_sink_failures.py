"""The file sink's failures, made the way they happen: a path under a regular file, a device that is always full
(/dev/full), a file size limit reached halfway through a batch (RLIMIT_FSIZE, in a child process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from agent.errors import SinkError
from agent.model import Event
from agent.pipeline import PipelineStats, SinkQueue, SinkWorker
from agent.pipeline.worker import backoff_delays
from agent.sinks.base import SinkContext
from agent.sinks.file import FileOptions, FileSink

WRITERS = ["thread", "aiofiles"]


def events(a: int, b: int) -> list[Event]:
    return [Event(id=str(i), source="s", type="t", sequence=i, body=b'{"n":%d}' % i) for i in range(a, b)]


@pytest.mark.anyio
@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("below", ["out.ndjson", "sub/deeper/out.ndjson"])
async def test_a_path_under_a_regular_file_says_not_a_directory_and_names_it(tmp_path: Path, writer: str,
                                                                            below: str) -> None:
    (tmp_path / "x").write_text("a regular file\n")
    path = tmp_path / "x" / below
    sink = FileSink(str(path), FileOptions(writer=writer), SinkContext())  # type: ignore[arg-type]
    with pytest.raises(SinkError) as caught:
        await sink.open()
    msg = str(caught.value)
    assert "Not a directory" in msg and f"{tmp_path / 'x'} is a regular file" in msg, msg
    assert "File exists" not in msg
    assert (tmp_path / "x").read_text() == "a regular file\n"


@pytest.mark.anyio
@pytest.mark.parametrize("writer", WRITERS)
async def test_a_write_to_dev_full_fails_its_send(writer: str) -> None:
    sink = FileSink("/dev/full", FileOptions(writer=writer), SinkContext())  # type: ignore[arg-type]
    await sink.open()
    try:
        for _ in range(2):  # the first batch too, and again when retried
            with pytest.raises(SinkError, match="No space left on device"):
                await sink.send(events(0, 2))
    finally:
        with pytest.raises(SinkError):
            await sink.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("writer", WRITERS)
async def test_a_dev_full_sink_counts_nothing_as_sent_and_retries(writer: str) -> None:
    """A real worker over the sink: every attempt is a send error, and no event is counted as sent."""
    stats = PipelineStats()
    q = SinkQueue(100)
    for e in events(0, 5):
        q.put_nowait(e)
    sink = FileSink("/dev/full", FileOptions(writer=writer), SinkContext())  # type: ignore[arg-type]
    w = SinkWorker(sink, q, stats.sink("file:/dev/full"), backoff=backoff_delays(0.001, 0.01))
    s = w.stats
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            while s.send_errors < 3:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert s.sent == 0 and s.batches == 0 and not s.healthy
    assert "No space left on device" in (s.last_error or "")


_FSIZE_CHILD = textwrap.dedent("""
    import asyncio, resource, signal, sys
    from agent.errors import SinkError
    from agent.model import Event
    from agent.sinks.base import SinkContext
    from agent.sinks.file import FileOptions, FileSink

    path, writer = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead

    def evs(a, b):
        return [Event(id=str(i), source="s", type="t", sequence=i, body=b'{"n":%d}' % i) for i in range(a, b)]

    async def main():
        sink = FileSink(path, FileOptions(writer=writer), SinkContext())
        await sink.open()
        await sink.send(evs(0, 3))
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40, hard))  # the next batch stops halfway through a line
        failed = 0
        for _ in range(2):
            try:
                await sink.send(evs(3, 10))
            except SinkError:
                failed += 1
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        await sink.send(evs(3, 10))  # the same batch again, as the pipeline retries it
        await sink.send(evs(10, 12))
        await sink.aclose()
        print(failed)

    asyncio.run(main())
""")


@pytest.mark.parametrize("writer", WRITERS)
def test_a_batch_that_fails_halfway_is_finished_once_when_retried(tmp_path: Path, writer: str) -> None:
    """A write cut short by a limit (what a full disk does too) keeps what it did not write; the retried batch is
    written once, in order, with nothing lost or doubled."""
    path = tmp_path / "ev.ndjson"
    proc = subprocess.run([sys.executable, "-c", _FSIZE_CHILD, str(path), writer], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"
    assert path.read_bytes() == b"".join(b'{"n":%d}\n' % i for i in range(12))


def test_a_close_that_fails_as_its_flush_did_is_logged_once(tmp_path: Path) -> None:
    from tests.helpers import run_cli

    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    from tests.ops.agentproc import FIXTURE_CGROUP as tree

    (tmp_path / "c.toml").write_text('[agent]\nstate_dir = "st"\ndrain_timeout = 1.0\n'
                                     f'[probes.cgroup]\nroot = "{tree}"\n[[sinks]]\nuri = "file:/dev/full"\n')
    res = run_cli(["run", "--config", "c.toml", "--probes", "cgroup", "--once"], cwd=tmp_path, timeout=60)
    assert res.returncode == 1  # nothing could be written
    assert res.stderr.decode().count("close failed") == 1, res.stderr.decode()
