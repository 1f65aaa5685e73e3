"""WatchSource against real file descriptors: cgroup notification files, pipes."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from agent.model import Reading
from agent.watch import CHANGE, WatchSource, live_stats

from .conftest import Collector

pytestmark = pytest.mark.anyio




async def test_file_watch_fires_on_the_kernels_notification(cg_root: Path, collector: Collector) -> None:
    counts: list[int] = []

    def fire(n: int) -> list[Reading]:
        counts.append(n)
        return [source.reading("/", {"n": n})]

    source = WatchSource("cgroup", coalesce=0.05)
    with source:
        assert ("cgroup", source.stats) in live_stats()
        assert source.watch_file("k", str(cg_root / "cgroup.events"), fire, first=lambda fd: os.pread(fd, 64, 0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.run, collector)
            (cg_root / "cgroup.freeze").write_text("1")
            r = await collector.wait_for(lambda r: r.output.get("n") == 1)
            assert r.kind == CHANGE and r.type == "io.hoststamp.host.v1.cgroup.change"
            tg.cancel_scope.cancel()
    assert counts == [1] and source.stats.watches == 0
    assert not [s for p, s in live_stats() if s is source.stats]
    assert source.stats.notifications == 1 and source.stats.firings == 1 and source.stats.readings == 1


async def test_budget_refuses_past_the_limit_with_one_reading(cg_root: Path, collector: Collector) -> None:
    for name in ("a", "b", "c"):
        (cg_root / name).mkdir()
    source = WatchSource("cgroup", max_watches=2)
    with source:
        fds = [source.watch_file(n, str(cg_root / n / "cgroup.events"), lambda c: []) for n in ("a", "b", "c")]
        assert fds[0] is not None and fds[1] is not None and fds[2] is None
        assert source.watch_file("again", str(cg_root / "c" / "cgroup.events"), lambda c: []) is None
        assert source.stats.watches == 2 and source.stats.refused == 2
        source.unwatch(fds[0])
        assert source.stats.watches == 1
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.run, collector)
            r = await collector.wait_for(lambda r: r.output.get("change") == "watch_limit")
            assert r.error and "watch limit reached" in r.error and r.output["max_watches"] == 2
            tg.cancel_scope.cancel()
    assert len([r for r in collector.readings if r.output.get("change") == "watch_limit"]) == 1


async def test_stream_watch_is_rearmed_after_each_drain(collector: Collector) -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    got: list[bytes] = []
    source = WatchSource("link")

    def drain() -> None:
        while True:
            try:
                chunk = os.read(r, 100)
            except BlockingIOError:
                return
            got.append(chunk)
            source.push(source.reading("pipe", {"bytes": len(chunk)}))

    try:
        with source:
            source.watch_stream(r, drain)
            async with anyio.create_task_group() as tg:
                tg.start_soon(source.run, collector)
                os.write(w, b"one")
                await collector.wait_for(lambda x: x.output.get("bytes") == 3)
                os.write(w, b"second")
                await collector.wait_for(lambda x: x.output.get("bytes") == 6)
                tg.cancel_scope.cancel()
    finally:
        os.close(r)
        os.close(w)
    assert got == [b"one", b"second"]


async def test_full_buffer_drops_oldest_and_says_so(collector: Collector) -> None:
    source = WatchSource("cgroup", buffer=2)
    with source:
        for i in range(5):
            source.push(source.reading(f"/{i}", {"i": i}))
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.run, collector)
            r = await collector.wait_for(lambda x: x.output.get("change") == "dropped")
            tg.cancel_scope.cancel()
    assert [x.subject for x in collector.readings[:2]] == ["/3", "/4"]
    assert r.output["dropped"] == 3 and r.error and "dropped" in r.error


async def test_a_failing_handler_becomes_an_error_reading(cg_root: Path, collector: Collector) -> None:
    def fire(n: int) -> list[Reading]:
        raise RuntimeError("boom")

    source = WatchSource("cgroup")
    with source:
        source.watch_file("k", str(cg_root / "cgroup.events"), fire, first=lambda fd: os.pread(fd, 64, 0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.run, collector)
            (cg_root / "cgroup.freeze").write_text("1")
            r = await collector.wait_for(lambda x: x.error is not None)
            tg.cancel_scope.cancel()
    assert "boom" in (r.error or "")


def test_ensure_nofile_never_lowers_the_limit() -> None:
    import resource

    from agent.watch.source import ensure_nofile

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert ensure_nofile(16) == soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_inotify_reports_directories_made_and_removed(tmp_path: Path) -> None:
    from agent.watch.inotify import IN_CREATE, IN_DELETE, IN_ONLYDIR, Inotify

    ino = Inotify()
    try:
        wd = ino.add(str(tmp_path), IN_CREATE | IN_DELETE | IN_ONLYDIR)
        assert ino.read() == []
        (tmp_path / "d").mkdir()
        (tmp_path / "d").rmdir()
        events = ino.read()
        assert [(e.wd, e.name, e.is_dir, bool(e.mask & IN_CREATE), bool(e.mask & IN_DELETE)) for e in events] == [
            (wd, "d", True, True, False), (wd, "d", True, False, True)]
        ino.remove(wd)
        ino.remove(wd)  # gone already: fine
        with pytest.raises(OSError):
            ino.add(str(tmp_path / "absent"), IN_CREATE)
    finally:
        ino.close()


def test_a_fifo_where_a_watched_file_should_be_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Opened on the event loop's thread: a FIFO with no writer would stop every probe and the agent's stop.
    A child runs it, so that a regression fails by its timeout instead of hanging the suite. A regular file
    that is a device is refused too."""
    import subprocess
    import sys

    os.mkfifo(tmp_path / "memory.events")
    code = (
        "import asyncio, sys\n"
        "from agent.watch import WatchSource\n"
        "async def main():\n"
        "    src = WatchSource('cgroup')\n"
        "    with src:\n"
        "        for path, write in ((sys.argv[1], None), (sys.argv[1], b'some 1 2'), ('/dev/null', None)):\n"
        "            try:\n"
        "                src.watch_file(path, path, lambda c: [], write=write)\n"
        "                print('watched')\n"
        "            except OSError as exc:\n"
        "                print(exc.errno, exc.strerror)\n"
        "        print(src.stats.watches)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "memory.events")], capture_output=True,
                         text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    lines = out.stdout.splitlines()
    assert lines[:3] == ["22 not a regular file (a FIFO, socket or device is never watched)"] * 3, out.stderr
    assert lines[3] == "0"  # each refusal gave its place in the budget back
