"""An archive directory removed (``rm -rf``) while the sink writes it: a sink error, counted and logged once, and a
new archive in its place that begins with every event not flushed yet. Real directories, a real worker, and a real
agent process."""

from __future__ import annotations

import logging
import shutil
import signal
from pathlib import Path

import anyio
import orjson
import pytest

from agent.archive.layout import read_events, scan
from agent.archive.policy import ArchiveOptions
from agent.archive.verify import verify_archive
from agent.errors import SinkError
from agent.pipeline import PipelineStats, SinkQueue, SinkWorker
from agent.pipeline.worker import backoff_delays
from agent.signing.keys import SigningKey, VerifyKey
from agent.sinks import SinkContext
from agent.sinks.archive import ArchiveSink
from tests.archive.test_archive_sink import stamped
from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, wait_for


def archived(root: Path) -> list[bytes]:
    listing = scan(root)
    return [line for n in listing.numbers()
            for line in read_events(listing.gz.get(n) or listing.events[n]).splitlines()]


@pytest.mark.anyio
async def test_a_removed_archive_is_a_sink_error_and_starts_afresh_with_what_was_not_flushed(
        tmp_path: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    root = tmp_path / "a"
    evs = stamped(key, 30)
    sink = ArchiveSink(str(root), ArchiveOptions(), SinkContext(key=key, state_dir=tmp_path / "state"))
    await sink.open()
    try:
        await sink.send(evs[:10])
        await sink.flush()  # these are confirmed: they go with the directory
        await sink.send(evs[10:20])  # these are not
        shutil.rmtree(root)
        with pytest.raises(SinkError, match=r"removed while it was written.*new archive was started.*10 events"):
            await sink.send(evs[20:30])
        assert root.is_dir()  # started afresh already
        await sink.send(evs[20:30])  # the pipeline's retry of the batch that failed
        await sink.flush()
    finally:
        await sink.aclose()
    assert archived(root) == [e.body for e in evs[10:30]]
    report = verify_archive(root, keys)
    assert report.ok, report.lines()
    assert report.totals.events == report.totals.sealed == 20


@pytest.mark.anyio
async def test_a_removal_found_by_a_flush_keeps_what_was_not_flushed(tmp_path: Path, key: SigningKey,
                                                                     keys: dict[str, VerifyKey]) -> None:
    root = tmp_path / "a"
    evs = stamped(key, 12)
    sink = ArchiveSink(str(root), ArchiveOptions(), SinkContext(key=key))
    await sink.open()
    try:
        await sink.send(evs)
        shutil.rmtree(root)
        with pytest.raises(SinkError, match="removed"):
            await sink.flush()
        await sink.flush()  # the pipeline's retry
    finally:
        await sink.aclose()
    assert archived(root) == [e.body for e in evs]
    assert verify_archive(root, keys).ok


@pytest.mark.anyio
async def test_a_worker_counts_the_removal_once_and_loses_no_event(tmp_path: Path, key: SigningKey,
                                                                   keys: dict[str, VerifyKey],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "a"
    evs = stamped(key, 40)
    stats = PipelineStats()
    q = SinkQueue(100)
    sink = ArchiveSink(str(root), ArchiveOptions(), SinkContext(key=key))
    w = SinkWorker(sink, q, stats.sink(f"archive:{root}"), backoff=backoff_delays(0.001, 0.01), flush_interval=0.05)
    s = w.stats
    with caplog.at_level(logging.WARNING, logger="hoststamp.sink"), anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            for e in evs[:20]:
                q.put_nowait(e)
            while s.sent < 20:
                await anyio.sleep(0.01)
            shutil.rmtree(root)
            for e in evs[20:]:
                q.put_nowait(e)
            while s.sent < 40:
                await anyio.sleep(0.01)
            q.close()
    assert s.send_errors == 1 and s.healthy
    assert len([r for r in caplog.records if "removed while it was written" in r.getMessage()]) == 1
    # the new archive holds every event sent after the removal, and what was taken and not flushed before it
    kept = archived(root)
    assert kept[-20:] == [e.body for e in evs[20:]] and set(kept) <= {e.body for e in evs}
    report = verify_archive(root, keys)
    assert report.ok, report.lines()


def test_an_agent_whose_archive_is_removed_goes_on_in_a_new_one(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    root = tmp_path / "arch"
    cfg = tmp_path / "hoststamp.toml"
    cfg.write_text(config_text([f"archive:{root}"]))
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: len(archived(root)) >= 8, what="events in the archive")
        shutil.rmtree(root)
        wait_for(lambda: root.is_dir() and len(archived(root)) >= 8, what="events in a new archive")
        wait_for(lambda: agent.status()["sinks"][0]["send_errors"] == 1, what="the removal counted")
        agent.signal(signal.SIGTERM)
        assert agent.stop() == 0
    assert agent.status()["sinks"][0]["send_errors"] == 1
    assert agent.log().count("removed while it was written") == 1, agent.log()
    done = run_cli(["verify", "--pub", "keys/host.pub", str(root)], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    seqs = [int(orjson.loads(line)["sequence"]) for line in archived(root)]
    assert seqs == sorted(seqs)
