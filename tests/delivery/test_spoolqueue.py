"""SpoolQueue and SinkWorker together: durable receipts, trimming after flush, overflow on a full spool."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from agent.config import SinkCommon
from agent.model import Event
from agent.pipeline import PipelineStats, Receipt, SequenceStore, SinkQueue, SinkWorker, Stamper, spoolqueue, wal
from agent.pipeline.parallel import build_pipeline
from agent.pipeline.spool import Spool
from agent.pipeline.spoolqueue import SpoolQueue, queue_for
from agent.receiver import PipelineDeliver, Rejected
from agent.signing.keys import SigningKey
from agent.sinks.memory import MemorySink


def ev(n: int, pad: int = 100) -> Event:
    return Event(id=f"e{n}", source="s", type="t", sequence=n, body=b'{"n":%d,"p":"%s"}' % (n, b"x" * pad))


def spooled(tmp: Path, overflow: str = "block", **kw: object) -> SpoolQueue:
    return SpoolQueue(Spool.shared(tmp / "spool", **kw), overflow)  # type: ignore[arg-type]


async def run_worker(q: SinkQueue, sink: MemorySink, until: int) -> SinkWorker:
    worker = SinkWorker(sink, q, PipelineStats().sink("m"), batch_max=64, flush_interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            while len(sink.events) < until:
                await anyio.sleep(0.01)
        q.close()
    return worker


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["always", "batch", "never"])
async def test_receipt_completes_once_durable_in_the_spool(tmp_path: Path, policy: str) -> None:
    q = spooled(tmp_path, fsync=policy)
    receipts = [Receipt(1) for _ in range(50)]
    for i, r in enumerate(receipts):
        assert await q.put(ev(i + 1), r)
    with anyio.fail_after(5):
        assert all([await r.wait() for r in receipts])  # no worker runs: the spool alone completes them
    assert len(q) == 50 and q.spool.unread == 50
    q.close()
    await q.aclose()


@pytest.mark.anyio
async def test_worker_sends_from_the_spool_and_trims_after_flush(tmp_path: Path) -> None:
    q = spooled(tmp_path, fsync="batch", segment_bytes=4096)
    sink = MemorySink()
    sink.fail_sends = 3
    for i in range(1, 501):
        await q.put(ev(i))
    await run_worker(q, sink, 500)
    assert [e.sequence for e in sink.events] == list(range(1, 501))
    assert q.spool.committed == 500 and len(list((tmp_path / "spool").glob("*.wal"))) <= 2
    await q.aclose()
    again = Spool(tmp_path / "spool")
    assert again.report.pending == 0  # nothing is sent twice after a clean stop
    again.close()


@pytest.mark.anyio
async def test_what_the_sink_never_flushed_is_read_again_after_a_restart(tmp_path: Path) -> None:
    q = spooled(tmp_path)
    for i in range(1, 101):
        await q.put(ev(i))
    batch = await q.get_batch(30)  # handed to a sink that died before flushing
    assert len(batch) == 30
    q.close()
    await q.aclose()
    q2 = spooled(tmp_path)
    sink = MemorySink()
    await run_worker(q2, sink, 100)
    assert [e.sequence for e in sink.events] == list(range(1, 101))
    await q2.aclose()


@pytest.mark.anyio
async def test_full_spool_drop_newest_counts(tmp_path: Path) -> None:
    q = spooled(tmp_path, "drop_newest", max_bytes=8192)
    results = [await q.put(ev(i)) for i in range(1, 201)]
    assert results.count(False) == q.dropped["spool_full"] > 0
    assert q.enqueued == 200 == len(q) + q.dropped["spool_full"]  # the dropped ones were routed here too
    assert q.spool.bytes <= 8192
    r = Receipt(1)
    assert not await q.put(ev(999), r) and await r.wait() is False
    q.close()
    await q.aclose()


@pytest.mark.anyio
async def test_full_spool_drop_oldest_evicts_and_keeps_the_newest(tmp_path: Path) -> None:
    q = spooled(tmp_path, "drop_oldest", max_bytes=8192, segment_bytes=4096)
    for i in range(1, 201):
        assert await q.put(ev(i))
    got = [e.sequence for e, _ in await q.get_batch(1000)]
    assert got[-1] == 200 and got == sorted(got)
    assert q.dropped["evicted"] == 200 - len(got) > 0
    q.close()
    await q.aclose()


@pytest.mark.anyio
async def test_full_spool_block_waits_for_the_worker(tmp_path: Path) -> None:
    q = spooled(tmp_path, "block", max_bytes=8192, segment_bytes=4096)
    sink = MemorySink()

    async def produce() -> None:
        for i in range(1, 301):
            assert await q.put(ev(i))

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        await run_worker(q, sink, 300)
    assert [e.sequence for e in sink.events] == list(range(1, 301))
    assert q.blocked > 0 and q.dropped == {}
    await q.aclose()


@pytest.mark.anyio
async def test_a_reloaded_queue_shares_the_spool_and_the_old_one_drains_only_its_own(tmp_path: Path) -> None:
    common = SinkCommon(uri="memory:", spool=str(tmp_path / "spool"))
    old = queue_for(common)
    for i in range(1, 11):
        await old.put(ev(i))
    new = queue_for(common)
    assert isinstance(old, SpoolQueue) and isinstance(new, SpoolQueue) and old.spool is new.spool
    old.close()
    for i in range(11, 21):
        await new.put(ev(i))
    first = MemorySink()
    await run_worker(old, first, 10)
    assert [e.sequence for e in first.events] == list(range(1, 11))
    await old.aclose()
    second = MemorySink()
    await run_worker(new, second, 10)
    assert [e.sequence for e in second.events] == list(range(11, 21))
    await new.aclose()
    assert not isinstance(queue_for(SinkCommon(uri="memory:")), SpoolQueue)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a disk that really fills up (needs root, as the suite does)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.anyio
async def test_a_full_disk_keeps_events_in_memory_and_acks_nothing_until_there_is_room(tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    q = SpoolQueue(Spool(tiny_fs / "spool", max_bytes=1 << 20, fsync="batch"))
    with open(filler, "wb", buffering=0) as f:  # fill the file system to the last block
        try:
            while True:
                f.write(b"\0" * 1024)
        except OSError:
            pass
    receipts = [Receipt(1) for _ in range(40)]
    for i, r in enumerate(receipts):
        assert await q.put(ev(i + 1, pad=2000), r)
    with anyio.move_on_after(0.3) as waited:
        await receipts[0].wait()
    assert waited.cancelled_caught  # the disk refused: no event is acked as durable
    assert len(q) == 40
    filler.unlink()  # room again: the retry writes them, in order
    with anyio.fail_after(10):
        assert all([await r.wait() for r in receipts])
    got = [e.sequence for e, _ in await q.get_batch(100)]
    assert got == list(range(1, 41))
    q.close()
    await q.aclose()


@pytest.mark.anyio
async def test_drop_oldest_that_cannot_start_a_segment_refuses_the_event_instead_of_raising(tmp_path: Path) -> None:
    q = spooled(tmp_path, "drop_oldest", max_bytes=8192, segment_bytes=1 << 20)  # one segment: evicting needs a new one
    blockers = [tmp_path / "spool" / f"{i:020d}.wal" for i in range(2, 202)]
    for b in blockers:
        b.mkdir()  # every name a new segment could take: starting one fails
    taken = [i for i in range(1, 201) if await q.put(ev(i))]
    assert 0 < len(taken) < 200 and q.dropped["spool_full"] == 200 - len(taken)
    assert [e.sequence for e, _ in await q.get_batch(1000)] == taken
    for b in blockers:
        b.rmdir()
    q.close()
    await q.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["always", "batch"])
async def test_a_new_segment_is_made_durable_off_the_event_loop(tmp_path: Path, policy: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Directory fsyncs wait for the disk like any other: they belong in the sync thread, before the receipts."""
    import threading

    from agent.pipeline import spool as spool_module

    where: list[bool] = []
    real = spool_module.fsync_dir

    def watched(path: Path) -> None:
        where.append(threading.current_thread() is threading.main_thread())
        real(path)

    monkeypatch.setattr(spool_module, "fsync_dir", watched)
    q = spooled(tmp_path, fsync=policy, segment_bytes=4096)
    receipts = [Receipt(1) for _ in range(200)]
    for i, r in enumerate(receipts):
        assert await q.put(ev(i + 1), r)
        if i % 20 == 0:
            await anyio.sleep(0)  # several write-outs: the segment rolls over
    with anyio.fail_after(5):
        assert all([await r.wait() for r in receipts])
    assert len(list((tmp_path / "spool").glob("*.wal"))) > 1
    assert where and not any(where)
    q.close()
    await q.aclose()


@pytest.mark.parametrize("overflow", ["block", "drop_newest", "drop_oldest"])
def test_an_event_no_spool_of_that_size_can_hold_is_refused_saying_so(tmp_path: Path, overflow: str) -> None:
    """Whatever the policy (``block`` included): counted as ``spool_full``, and the guest is told it is larger
    than the sink's ``spool_max_bytes``, not that an overflow policy dropped it."""
    async def main() -> tuple[Rejected | None, SpoolQueue]:
        q = spooled(tmp_path, overflow, max_bytes=4096)
        pipeline = build_pipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [q], PipelineStats(), 0)
        await pipeline.start()
        deliver = PipelineDeliver(pipeline)
        event = {"specversion": "1.0", "id": "big", "source": "guest://vm", "type": "t", "data": {"pad": "x" * 5000}}
        try:
            await asyncio.wait_for(deliver(event, "vsock:3"), 20)
            return None, q
        except Rejected as r:
            return r, q
        finally:
            await deliver.aclose()
            await pipeline.aclose(5)
            pipeline.close()
            q.close()
            await q.aclose()

    refused, q = asyncio.run(main())
    assert refused is not None and refused.reason == "dropped", refused
    assert "larger than the sink's spool_max_bytes (4096) leaves room for (4088)" in refused.detail, refused.detail
    assert q.dropped == {"spool_full": 1} and q.enqueued == 1


def _sized(n: int, size: int) -> Event:
    """An event whose spool record is ``size`` bytes."""
    e = ev(n, pad=0)
    return ev(n, pad=size - wal.record_size(e))


@pytest.mark.anyio
@pytest.mark.parametrize("overflow", ["block", "drop_newest", "drop_oldest"])
async def test_a_record_within_a_segment_header_of_the_cap_is_refused_not_waited_on(tmp_path: Path,
                                                                                   overflow: str) -> None:
    """A record that fits ``spool_max_bytes`` but not beside a segment's header can never be spooled: it is
    refused at once, under ``block`` too, rather than holding every later event behind it."""
    q = spooled(tmp_path, overflow, max_bytes=8192)
    big = _sized(1, 8192 - len(wal.MAGIC) + 1)
    assert wal.record_size(big) == q.largest + 1
    with anyio.fail_after(5):
        assert await q.put(big) is False
    assert q.dropped == {"spool_full": 1}
    with anyio.fail_after(5):
        assert await q.put(_sized(2, q.largest))  # the largest that fits an empty spool is taken
    q.close()
    await q.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("overflow", ["block", "drop_newest"])
async def test_a_large_record_is_taken_once_everything_before_it_is_delivered(tmp_path: Path,
                                                                              overflow: str) -> None:
    """The newest segment keeps records already delivered until it rotates, which only a new record makes it
    do: a record that fits an empty spool but not beside them is taken once nothing is undelivered, not
    waited on (under ``block``, for ever) nor refused."""
    q = spooled(tmp_path, overflow, max_bytes=8192)
    sink = MemorySink()
    worker = SinkWorker(sink, q, PipelineStats().sink("m"), batch_max=64, flush_interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        for i in range(1, 6):
            assert await q.put(ev(i, pad=20))
        with anyio.fail_after(10):
            while q.spool.committed < 5:  # delivered and committed; the newest segment still holds them
                await anyio.sleep(0.01)
        assert q.pending == 0 and q.spool.bytes > len(wal.MAGIC)
        with anyio.fail_after(5):
            assert await q.put(_sized(6, q.largest))
        assert q.dropped == {}
        with anyio.fail_after(10):
            while len(sink.events) < 6:
                await anyio.sleep(0.01)
        q.close()
    await q.aclose()


@pytest.mark.anyio
async def test_drop_oldest_throws_nothing_away_for_a_record_no_eviction_can_make_room_for(tmp_path: Path) -> None:
    """While the sink holds records unconfirmed, their segments stay: when deleting every other segment would
    still leave no room, the newcomer is refused and nothing is evicted for it."""
    q = spooled(tmp_path, "drop_oldest", max_bytes=8192)
    for i in range(1, 61):
        assert await q.put(ev(i, pad=20))
    assert len(await q.get_batch(5)) == 5  # handed to the sink, not confirmed: their segment is in flight
    for i in range(61, 91):
        assert await q.put(ev(i, pad=20))
    q._write_out()  # into a second segment, which the sink holds nothing of
    assert q.spool.outstanding == 5 and len(list((tmp_path / "spool").glob("*.wal"))) == 2
    assert 0 < q.spool.evictable_bytes() < q.spool.bytes
    with anyio.fail_after(5):
        assert await q.put(_sized(91, q.largest - 100)) is False
    assert q.dropped == {"spool_full": 1}  # and no "evicted": the queued events are all still there
    assert q.pending == 90
    q.close()
    await q.aclose()


@pytest.mark.anyio
async def test_drop_oldest_says_in_the_log_what_it_evicted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Events a guest was told were taken, gone: logged when it happens (once, then at most every 10 s), not
    only counted."""
    q = spooled(tmp_path, "drop_oldest", max_bytes=8192)
    with caplog.at_level("WARNING", logger="hoststamp.spool"):
        for i in range(1, 401):
            assert await q.put(ev(i, pad=20))
        said = [r.getMessage() for r in caplog.records if "drop_oldest deleted" in r.getMessage()]
        assert q.dropped.get("evicted", 0) > 0
        assert len(said) == 1 and "events not delivered (counted as dropped, evicted)" in said[0], said
        q.close()  # what was held back by the rate is said when no more can come, so the lines add up
        await q.aclose()
    said = [r.getMessage() for r in caplog.records if "drop_oldest deleted" in r.getMessage()]
    assert len(said) == 2, said
    assert sum(int(line.split("records, ")[1].split(" events")[0]) for line in said) == q.dropped["evicted"]


@pytest.mark.anyio
async def test_evictions_held_back_by_the_log_rate_are_said_when_it_allows(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only with a later eviction: a burst that ends is said in full once the rate allows."""
    monkeypatch.setattr(spoolqueue, "EVICTED_LOG_EVERY", 0.2)
    q = spooled(tmp_path, "drop_oldest", max_bytes=8192)
    with caplog.at_level("WARNING", logger="hoststamp.spool"):
        for i in range(1, 401):
            assert await q.put(ev(i, pad=20))

        def said() -> list[str]:
            return [r.getMessage() for r in caplog.records if "drop_oldest deleted" in r.getMessage()]

        with anyio.fail_after(10):
            while len(said()) < 2:
                await anyio.sleep(0.05)
        assert sum(int(line.split("records, ")[1].split(" events")[0]) for line in said()) == q.dropped["evicted"]
        q.close()
        await q.aclose()
    assert len(said()) == 2  # nothing left to say at the close
