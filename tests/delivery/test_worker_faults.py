"""A failing sink or a damaged spool is this sink's problem only: counted, logged once, retried, never fatal.

Real spool directories on disk; faults are made the way they happen: a sink raising something other than a
SinkError, a segment file removed, cut short or replaced while a worker runs, a cursor that cannot be written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import pytest

from agent.errors import SinkError
from agent.model import Event
from agent.pipeline import PipelineStats, SinkWorker, wal
from agent.pipeline.salvage import decode_cursor
from agent.pipeline.spool import Spool
from agent.pipeline.spoolqueue import SpoolQueue
from agent.pipeline.stats import SinkStats
from agent.pipeline.worker import backoff_delays
from agent.sinks.memory import MemorySink

FOREVER = 10**9


def ev(n: int) -> Event:
    return Event(id=f"e{n}", source="s", type="t", sequence=n, body=b'{"n":%d,"p":"%s"}' % (n, b"x" * 100))


class Faulty(MemorySink):
    """Raises ``make()`` on the next ``bad_sends`` sends and ``bad_flushes`` flushes."""

    def __init__(self, make: Callable[[], Exception], *, sends: int = 0, flushes: int = 0) -> None:
        super().__init__()
        self.make = make
        self.bad_sends, self.bad_flushes = sends, flushes
        self.tries = 0

    async def send(self, batch: Sequence[Event]) -> None:
        self.tries += 1
        if self.bad_sends > 0:
            self.bad_sends -= 1
            raise self.make()
        await super().send(batch)

    async def flush(self) -> None:
        if self.bad_flushes > 0:
            self.bad_flushes -= 1
            raise self.make()
        await super().flush()


def spooled(d: Path) -> SpoolQueue:
    return SpoolQueue(Spool(d, max_bytes=1 << 20, fsync="batch", segment_bytes=4096))


def worker(sink: MemorySink, q: SpoolQueue, stats: SinkStats) -> SinkWorker:
    return SinkWorker(sink, q, stats, batch_max=16, flush_interval=0.02, backoff=backoff_delays(0.001, 0.02))


async def fill(q: SpoolQueue, first: int, last: int) -> None:
    """Put events ``first..last``, a few per loop turn, so they spread over several segments."""
    for i in range(first, last + 1):
        assert await q.put(ev(i))
        if i % 8 == 0:
            await anyio.sleep(0)
    await anyio.sleep(0)  # the last write-out


async def until(cond: Callable[[], bool]) -> None:
    with anyio.fail_after(20):
        while not cond():
            await anyio.sleep(0.005)


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def sequences(path: Path) -> list[int]:
    return [r.event.sequence for r in wal.parse(path.read_bytes(), len(wal.MAGIC)).records]


def seqs(sink: MemorySink) -> list[int]:
    return [e.sequence for e in sink.events]


class Unacked(Faulty):
    """A sink that reports its trouble itself before its flush fails, as the socket sink does (its sender's
    'no ack' first, then the flush's own 'not acknowledged')."""

    async def flush(self) -> None:
        if self.bad_flushes > 0:
            self.trouble("no ack for 3.0s")
        await super().flush()


@pytest.mark.anyio
async def test_a_flush_failing_the_same_way_is_logged_once_though_the_sink_reports_its_own_trouble(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "hoststamp.sink")
    q = spooled(tmp_path / "a")
    sink = Unacked(lambda: SinkError("20 not acknowledged after 3.0s (last error: no ack for 3.0s)"),
                   flushes=FOREVER)
    stats = PipelineStats().sink("a")
    async with anyio.create_task_group() as tg:
        w = worker(sink, q, stats)
        w.label = "a"
        tg.start_soon(w.run)
        await fill(q, 1, 20)
        await until(lambda: stats.send_errors >= 10)
        sink.bad_flushes = 0  # delivered: the same failure afterwards is news again
        await until(lambda: q.spool.committed == 20)
        sink.bad_flushes = FOREVER
        await fill(q, 21, 30)
        await until(lambda: stats.send_errors >= 15)
        sink.bad_flushes = 0
        await until(lambda: q.spool.committed == 30)
        q.close()
    await q.aclose()
    logged = [r.getMessage() for r in caplog.records if "not acknowledged" in r.getMessage()]
    assert logged == ["sink a: 20 not acknowledged after 3.0s (last error: no ack for 3.0s) (retrying)"] * 2


@pytest.mark.anyio
@pytest.mark.parametrize("exc_type", [RuntimeError, OSError])
async def test_a_sink_that_raises_is_retried_while_the_other_sink_keeps_receiving(
    tmp_path: Path, exc_type: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "hoststamp.sink")
    qa, qb = spooled(tmp_path / "a"), spooled(tmp_path / "b")
    a, b = Faulty(lambda: exc_type("sink bug"), sends=FOREVER), MemorySink()
    stats = PipelineStats()
    sa = stats.sink("a")
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker(a, qa, sa).run)
        tg.start_soon(worker(b, qb, stats.sink("b")).run)
        await fill(qa, 1, 200)
        await fill(qb, 1, 200)
        await until(lambda: len(b.events) == 200 and a.tries >= 5)
        assert a.events == [] and not sa.healthy and sa.send_errors == a.tries
        assert sa.last_error == f"send failed: {exc_type.__name__}: sink bug"
        assert qa.spool.committed == 0 and qa.pending == 200  # nothing confirmed, nothing trimmed
        a.bad_sends = 0  # the fault clears
        await until(lambda: qa.spool.committed == 200)
        qa.close()
        qb.close()
    await qa.aclose()
    await qb.aclose()
    assert seqs(a) == seqs(b) == list(range(1, 201))
    assert sa.healthy and sa.sent == 200 and stats.sink("b").send_errors == 0
    logged = [r for r in caplog.records if "sink bug" in r.getMessage()]
    assert len(logged) == 1  # once, however many retries
    assert (logged[0].exc_info is not None) == (exc_type is RuntimeError)  # a bug gets its traceback
    assert Spool(tmp_path / "a").report.pending == 0  # and nothing is left to send again


@pytest.mark.anyio
async def test_a_sink_that_cannot_open_with_an_unexpected_error_is_retried(tmp_path: Path) -> None:
    class NoOpen(MemorySink):
        async def open(self) -> None:
            if self.fail_opens > 0:
                self.fail_opens -= 1
                raise ValueError("bad option")

    q, sink, stats = spooled(tmp_path), NoOpen(), SinkStats()
    sink.fail_opens = 3
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker(sink, q, stats).run)
        await fill(q, 1, 50)
        await until(lambda: q.spool.committed == 50)
        q.close()
    await q.aclose()
    assert seqs(sink) == list(range(1, 51)) and sink.closed
    assert stats.send_errors == 3 and stats.last_error == "open failed: ValueError: bad option" and stats.healthy


@pytest.mark.anyio
async def test_a_flush_that_raises_trims_nothing_until_it_works(tmp_path: Path) -> None:
    q = spooled(tmp_path)
    sink, stats = Faulty(lambda: OSError(5, "Input/output error"), flushes=FOREVER), SinkStats()
    await fill(q, 1, 200)
    on_disk = len(segments(tmp_path))
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker(sink, q, stats).run)
        await until(lambda: stats.send_errors >= 5)
        assert sink.events and not stats.healthy  # sent, but never confirmed
        assert stats.last_error == "flush failed: OSError: [Errno 5] Input/output error"
        assert q.spool.committed == 0 and len(segments(tmp_path)) == on_disk
        assert decode_cursor((tmp_path / "cursor").read_bytes()) == 0
        sink.bad_flushes = 0
        await until(lambda: q.spool.committed == 200)
        q.close()
    await q.aclose()
    assert seqs(sink) == list(range(1, 201)) and stats.healthy


@pytest.mark.anyio
@pytest.mark.parametrize("damage", ["removed", "cut short", "emptied"])
async def test_a_damaged_segment_loses_only_its_own_records_and_both_sinks_go_on(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    qa, qb = spooled(tmp_path / "a"), spooled(tmp_path / "b")
    a, b = Faulty(lambda: RuntimeError("not yet"), sends=FOREVER), MemorySink()
    stats = PipelineStats()
    sa = stats.sink("a")
    wa = worker(a, qa, sa)
    await fill(qa, 1, 300)
    await fill(qb, 1, 300)
    segs = segments(tmp_path / "a")
    assert len(segs) >= 6
    victim = segs[3]  # neither the one being read nor the one being written
    in_it = sequences(victim)
    async with anyio.create_task_group() as tg:
        tg.start_soon(wa.run)
        tg.start_soon(worker(b, qb, stats.sink("b")).run)
        await until(lambda: wa.holding > 0)  # the first batch is taken; the victim is not read yet
        if damage == "removed":
            victim.unlink()
            kept: list[int] = []
        else:
            size = victim.stat().st_size // 2 if damage == "cut short" else 0
            os.truncate(victim, size)
            kept = sequences(victim) if size else []
        lost = [n for n in in_it if n not in kept]
        assert lost
        a.bad_sends = 0
        expected = [n for n in range(1, 301) if n not in lost]
        await until(lambda: seqs(a) == expected and qa.spool.committed == 300)
        assert sa.dropped == {"spool_damaged": len(lost)} and qa.spool.lost == len(lost)
        await fill(qa, 301, 340)  # the worker goes on with what comes next
        await fill(qb, 301, 340)
        await until(lambda: len(a.events) == len(expected) + 40 and len(b.events) == 340)
        qa.close()
        qb.close()
    await qa.aclose()
    await qb.aclose()
    assert seqs(a) == [*expected, *range(301, 341)] and seqs(b) == list(range(1, 341))
    assert stats.sink("b").dropped == {} and sa.healthy
    assert f"segment {victim.name}: " in caplog.text and f"; {len(lost)} records in it lost" in caplog.text
    again = Spool(tmp_path / "a")
    assert again.report.pending == 0 and again.report.clean
    again.close()


@pytest.mark.anyio
async def test_the_segment_being_written_removed_from_outside_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    q = spooled(tmp_path)
    sink, stats = Faulty(lambda: RuntimeError("not yet"), sends=FOREVER), SinkStats()
    w = worker(sink, q, stats)
    await fill(q, 1, 100)
    tail = segments(tmp_path)[-1]
    assert len(segments(tmp_path)) > 2 and sequences(tail)
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        await until(lambda: w.holding > 0)
        tail.unlink()
        await fill(q, 101, 110)  # written into the removed file, still open
        sink.bad_sends = 0
        await until(lambda: len(sink.events) == 110)
        await fill(q, 111, 150)  # into a new segment
        await until(lambda: q.spool.committed == 150)
        q.close()
    await q.aclose()
    assert seqs(sink) == list(range(1, 151)) and q.spool.lost == 0 and stats.dropped == {}
    assert f"{tail.name} was removed while being written" in caplog.text
    again = Spool(tmp_path)
    assert again.report.pending == 0 and again.report.clean
    again.close()


@pytest.mark.anyio
async def test_the_segment_being_written_cut_short_counts_what_it_lost_and_goes_on(tmp_path: Path) -> None:
    q = spooled(tmp_path)
    sink, stats = Faulty(lambda: RuntimeError("not yet"), sends=FOREVER), SinkStats()
    w = worker(sink, q, stats)
    await fill(q, 1, 100)
    tail = segments(tmp_path)[-1]
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        await until(lambda: w.holding > 0)
        os.truncate(tail, tail.stat().st_size - 30)  # its last record torn
        await fill(q, 101, 110)  # appended after the tear
        sink.bad_sends = 0
        await until(lambda: q.spool.lost > 0 and len(sink.events) + q.spool.lost == 110)
        await fill(q, 111, 150)
        await until(lambda: q.spool.committed == 150)
        q.close()
    await q.aclose()
    got = seqs(sink)
    assert got == sorted(got) and len(got) + stats.dropped["spool_damaged"] == 150
    assert got[-40:] == list(range(111, 151))  # everything after the damage arrives
    assert 100 not in got  # the torn record is not handed out


@pytest.mark.anyio
async def test_an_unreadable_segment_is_retried_not_skipped_until_it_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    q = spooled(tmp_path)
    sink, stats = MemorySink(), SinkStats()
    await fill(q, 1, 200)
    segs = segments(tmp_path)
    victim = segs[2]
    before = [n for s in segs[:2] for n in sequences(s)]
    in_it = sequences(victim)
    victim.unlink()
    victim.mkdir()  # opens, but every read fails (EISDIR), as a bad block would with EIO
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker(sink, q, stats).run)
        await until(lambda: stats.send_errors >= 5)
        assert seqs(sink) == before and q.spool.lost == 0 and not stats.healthy
        assert stats.last_error is not None
        assert stats.last_error.startswith(f"spool {tmp_path}: cannot read {victim.name} at offset ")
        assert stats.last_error.endswith(": Is a directory")
        assert caplog.text.count("Is a directory") == 1
        victim.rmdir()  # given up on: the rest is delivered, what it held is counted
        await until(lambda: q.spool.committed == 200)
        q.close()
    await q.aclose()
    assert seqs(sink) == [n for n in range(1, 201) if n not in in_it]
    assert stats.dropped == {"spool_damaged": len(in_it)} and stats.healthy


@pytest.mark.anyio
async def test_a_cursor_that_cannot_be_written_holds_the_trim_and_is_written_once_it_can(tmp_path: Path) -> None:
    q = spooled(tmp_path)
    sink, stats = MemorySink(), SinkStats()
    await fill(q, 1, 200)
    on_disk = segments(tmp_path)
    fd = q.spool._cursor_fd
    saved = os.dup(fd)
    readonly = os.open(tmp_path / "cursor", os.O_RDONLY)
    os.dup2(readonly, fd)  # every write to the cursor fails (EBADF)
    os.close(readonly)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker(sink, q, stats).run)
            await until(lambda: stats.send_errors >= 3)
            sent = len(sink.events)
            await fill(q, 201, 220)
            await until(lambda: stats.send_errors >= 8)
            assert stats.last_error == f"spool {tmp_path}: cannot write the cursor: Bad file descriptor"
            assert len(sink.events) == sent and not stats.healthy  # it waits: no further batch goes out
            assert set(on_disk) <= set(segments(tmp_path))  # nothing trimmed
            assert decode_cursor((tmp_path / "cursor").read_bytes()) == 0
            os.dup2(saved, fd)
            await until(lambda: q.spool.committed == 220)
            q.close()
    finally:
        os.close(saved)
    await q.aclose()
    assert seqs(sink) == list(range(1, 221)) and stats.healthy
    assert decode_cursor((tmp_path / "cursor").read_bytes()) == 220
    again = Spool(tmp_path)
    assert again.report.pending == 0
    again.close()


@pytest.mark.anyio
async def test_the_batch_a_failing_sink_retries_is_counted_in_hand_and_the_counts_add_up() -> None:
    from agent.pipeline import SinkQueue

    q = SinkQueue(40, "drop_newest")
    sink = Faulty(lambda: OSError("disk gone"), sends=FOREVER)
    stats = PipelineStats().sink("f")
    w = worker(sink, q, stats)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        await q.put_many([ev(i) for i in range(1, 61)])
        await until(lambda: sink.tries >= 3)
        assert w.holding == 16  # one batch, taken from the queue and retried
        assert q.enqueued == 60 == stats.sent + sum(q.dropped.values()) + len(q) + w.holding
        sink.bad_sends = 0
        await until(lambda: w.holding == 0 and len(q) == 0)
        assert q.enqueued == stats.sent + sum(q.dropped.values())
        q.close()


@pytest.mark.anyio
async def test_what_a_down_socket_sink_took_of_the_batch_in_hand_is_not_counted_unconfirmed_too(
        tmp_path: Path) -> None:
    """Without a spool, a shutdown's drain counts the batch a worker holds (retrying) whole as dropped
    (``drain_timeout``); the part of it the socket sink's sender took is in the sender's count of unacked
    events too, so what the worker reports unconfirmed (``may be lost``) leaves it out: only what was counted
    as sent is."""
    from agent.pipeline import SinkQueue
    from agent.sinks.base import SinkContext
    from agent.sinks.socket import SocketOptions, UnixSink

    q = SinkQueue(100)
    sink = UnixSink(str(tmp_path / "nobody.sock"), SocketOptions(max_unacked=20, send_timeout=0.2,
                                                                 backoff_initial=0.05, backoff_max=0.1),
                    SinkContext())
    worker = SinkWorker(sink, q, PipelineStats().sink("s"), batch_max=16, backoff=backoff_delays(0.01, 0.05))
    for i in range(1, 81):
        assert q.put_nowait(ev(i))
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            while not (sink.unacked == 20 and worker.holding == 16):
                await anyio.sleep(0.01)
        assert worker.stats.sent == 16 and sink.partly_taken == 4
        assert worker._unconfirmed() == 16  # not 20: the other 4 are the batch in hand's
        worker.close_by = time.monotonic()  # its close is not waited for
        tg.cancel_scope.cancel()
    await sink.sender.aclose()


class NeverOpens(MemorySink):
    async def open(self) -> None:
        raise SinkError("cannot connect: the server is down")


@pytest.mark.anyio
@pytest.mark.parametrize("spooled_queue", [False, True])
async def test_a_sink_that_cannot_open_holds_no_stop_when_it_has_nothing_to_send(tmp_path: Path,
                                                                                 spooled_queue: bool) -> None:
    """Its queue closes (the agent stops) while it waits to try opening again: with nothing for it, it ends
    then, rather than at the end of its wait (here 30 s) or the drain's deadline."""
    from agent.pipeline import SinkQueue
    from agent.transport import Backoff

    q = spooled(tmp_path / "s") if spooled_queue else SinkQueue(100)
    stats = PipelineStats().sink("down")
    w = SinkWorker(NeverOpens(), q, stats, backoff=Backoff(30.0, 30.0, rng=lambda: 1.0))
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        await until(lambda: stats.send_errors >= 1)
        q.close()
        with anyio.fail_after(5):
            while not w.finished:
                await anyio.sleep(0.01)
    if isinstance(q, SpoolQueue):
        await q.aclose()
    assert stats.sent == 0 and not stats.healthy
