"""The ``archive:`` sink: registry and config, events from the real stamper, ticks, lock, shutdown."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from agent.archive.policy import ArchiveOptions
from agent.archive.proof import check_proof, make_proof
from agent.archive.verify import verify_archive
from agent.config import endpoint
from agent.errors import ConfigError, SinkError
from agent.model import Event, Reading
from agent.pipeline import SequenceStore, Stamper
from agent.signing.keys import SigningKey, VerifyKey
from agent.sinks import SinkContext, get
from agent.sinks.archive import ArchiveSink


def stamped(key: SigningKey, n: int, probes: tuple[str, ...] = ("cgroup", "link")) -> list[Event]:
    stamper = Stamper(key, "test-host", SequenceStore(None))
    return [stamper.stamp(Reading(probe=probes[i % len(probes)], subject=f"/s{i}", output={"i": i}))
            for i in range(n)]


def test_registered_with_its_options(tmp_path: Path) -> None:
    assert get("archive") is ArchiveSink
    cfg = endpoint({"uri": f"archive:{tmp_path}", "segment_max_bytes": 1 << 20, "fsync": "batch",
                    "retain_age": 86400, "origin": "example.org/h1"}, prefix="sinks[0]", file="x.toml")
    assert cfg.scheme == "archive" and cfg.target == str(tmp_path)
    assert cfg.options == ArchiveOptions(segment_max_bytes=1 << 20, fsync="batch", retain_age=86400.0,
                                         origin="example.org/h1")
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.segment_size"):
        endpoint({"uri": "archive:x", "segment_size": 1}, prefix="sinks[0]", file="x.toml")
    with pytest.raises(ConfigError, match="checkpoint_every"):
        endpoint({"uri": "archive:x", "checkpoint_every": 0}, prefix="sinks[0]", file="x.toml")
    with pytest.raises(ConfigError, match="fsync"):
        endpoint({"uri": "archive:x", "fsync": "sometimes"}, prefix="sinks[0]", file="x.toml")


@pytest.mark.anyio
async def test_stamped_events_archived_sealed_and_provable(tmp_path: Path, key: SigningKey,
                                                          keys: dict[str, VerifyKey]) -> None:
    evs = stamped(key, 300)
    sink = ArchiveSink(str(tmp_path / "a"), ArchiveOptions(segment_max_bytes=40_000), SinkContext(key=key))
    await sink.open()
    for i in range(0, 300, 64):
        await sink.send(evs[i:i + 64])
    await sink.flush()
    await sink.aclose()
    report = verify_archive(tmp_path / "a", keys)
    assert report.ok, report.lines()
    assert report.totals.events == report.totals.sealed == 300 and report.totals.segments > 1
    target = evs[123]
    bundle = make_proof(tmp_path / "a", target.id, source=target.source)
    assert bundle["event"].encode() == target.body and check_proof(bundle, keys).ok


@pytest.mark.anyio
async def test_interval_checkpoint_by_the_tick(tmp_path: Path, key: SigningKey) -> None:
    sink = ArchiveSink(str(tmp_path / "a"), ArchiveOptions(checkpoint_interval=0.1), SinkContext(key=key))
    await sink.send(stamped(key, 3))
    w = sink.writer
    assert w is not None and w.sealed in (0, 3)
    deadline = time.monotonic() + 10
    with anyio.fail_after(10):
        while w.sealed != 3 and time.monotonic() < deadline:
            await anyio.sleep(0.05)
    assert w.sealed == 3
    await sink.aclose()


@pytest.mark.anyio
async def test_needs_the_key_and_one_writer(tmp_path: Path, key: SigningKey) -> None:
    with pytest.raises(SinkError, match="signing key"):
        await ArchiveSink(str(tmp_path / "a"), None, SinkContext()).send(stamped(key, 1))
    first = ArchiveSink(str(tmp_path / "a"), None, SinkContext(key=key))
    second = ArchiveSink(str(tmp_path / "a"), None, SinkContext(key=key))
    await first.open()
    with pytest.raises(SinkError, match="in use"):
        await second.open()
    await first.aclose()
    await second.open()
    await second.aclose()
    with pytest.raises(SinkError, match="needs a directory"):
        ArchiveSink("", None, SinkContext(key=key))


def test_public_names() -> None:
    import agent.archive as archive

    namespace: dict[str, object] = {}
    exec("from agent.archive import *", namespace)
    assert sorted(n for n in namespace if not n.startswith("__")) == sorted(archive.__all__)
    assert len(set(archive.__all__)) == len(archive.__all__)


@pytest.mark.anyio
async def test_through_the_pipeline(tmp_path: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    """Readings -> stamp -> queue -> SinkWorker -> archive, shut down as the agent does; then verify."""
    from agent.pipeline import PipelineStats, SinkQueue, SinkWorker
    from agent.pipeline.router import Pipeline

    stats = PipelineStats()
    q = SinkQueue(1000)
    sink = ArchiveSink(str(tmp_path / "a"), ArchiveOptions(checkpoint_every=50), SinkContext(key=key))
    worker = SinkWorker(sink, q, stats.sink("archive"), batch_max=64)
    pipeline = Pipeline(Stamper(key, "test-host", SequenceStore(None)), [q], stats)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            for i in range(500):
                await pipeline.submit(Reading(probe=("cgroup", "mounts")[i % 2], subject=f"/x{i}", output={"i": i}))
            pipeline.close()
    assert worker.finished and stats.sink("archive").sent == 500
    report = verify_archive(tmp_path / "a", keys)
    assert report.ok, report.lines()
    assert report.totals.events == report.totals.sealed == 500


#: what a healthy archive must never be accused of, even when read while it changes
FORGERY = {"root-mismatch", "event-signature", "record-signature", "checkpoint-signature", "consistency",
           "segment-hash", "bad-event", "bad-record", "sequence-order"}


@pytest.mark.anyio
async def test_verify_while_the_writer_runs(tmp_path: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    """Reading a live archive (rotating, compressing, removing old segments) never fails or accuses it of forgery."""
    opts = ArchiveOptions(segment_max_bytes=6000, retain_bytes=30_000, checkpoint_every=7)
    sink = ArchiveSink(str(tmp_path / "a"), opts, SinkContext(key=key))
    evs = stamped(key, 600)
    done = anyio.Event()
    reports = []

    async def write() -> None:
        for i in range(0, 600, 4):
            await sink.send(evs[i:i + 4])
        done.set()

    async def read() -> None:
        while not done.is_set():
            reports.append(await anyio.to_thread.run_sync(verify_archive, tmp_path / "a", keys))

    await sink.open()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            tg.start_soon(read)
    await sink.aclose()
    assert reports
    for r in reports:
        assert not {p.code for p in r.problems} & FORGERY, [str(p) for p in r.problems if p.code in FORGERY]
    final = verify_archive(tmp_path / "a", keys)
    assert final.ok, final.lines()


@pytest.mark.parametrize("where", ["loop/x", "file"])
def test_an_archive_where_no_directory_can_be_is_a_sink_error_saying_why(tmp_path: Path, where: str) -> None:
    """A loop of symbolic links, or a file, where the archive's directory should be: the sink cannot open, says
    why, and is retried like any sink (it was a traceback for a loop, and ``File exists`` for a file)."""
    key = SigningKey.generate()
    (tmp_path / "loop").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop")
    (tmp_path / "file").write_text("not an archive")
    sink = ArchiveSink(str(tmp_path / where), None, SinkContext(key=key, state_dir=str(tmp_path / "state")))
    with pytest.raises(SinkError, match=r"cannot open the archive: (Too many levels|not a directory)"):
        anyio.run(sink.open)


@pytest.mark.anyio
async def test_an_archive_written_with_another_key_before_is_warned_of(
        tmp_path: Path, key: SigningKey, caplog: pytest.LogCaptureFixture) -> None:
    """The archive then verifies only with both public keys: said when it is opened, not found out later."""
    old = SigningKey.generate()
    first = ArchiveSink(str(tmp_path / "a"), None, SinkContext(key=old))
    await first.send(stamped(old, 2))
    await first.aclose()
    with caplog.at_level("WARNING", logger="hoststamp.sink.archive"):
        again = ArchiveSink(str(tmp_path / "a"), None, SinkContext(key=old))
        await again.open()
        await again.aclose()
        assert not [r for r in caplog.records if "signed with key" in r.getMessage()]  # the same key: no word
        second = ArchiveSink(str(tmp_path / "a"), None, SinkContext(key=key))
        await second.open()
        await second.send(stamped(key, 2, probes=("lve",)))  # sources of their own: their numbers start at 1
        await second.aclose()
    said = [r.getMessage() for r in caplog.records if "signed with key" in r.getMessage()]
    assert len(said) == 1 and old.keyid[:16] in said[0] and key.keyid[:16] in said[0], said
    both = {k.keyid: k.verify_key() for k in (old, key)}
    assert verify_archive(tmp_path / "a", both).ok
