"""The spool on real files: record format, trimming, size cap, salvage of damaged segments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import SinkError
from agent.model import Event
from agent.pipeline import wal
from agent.pipeline.spool import Spool


def ev(n: int, size: int = 40) -> Event:
    return Event(id=f"id-{n}", source="hoststamp://h/p", type="t", sequence=n, body=b'{"n":%d,"pad":"%s"}' % (
        n, b"x" * size))


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def test_record_roundtrip_and_index_order() -> None:
    data = wal.encode_many(5, [ev(1), ev(2)])
    parsed = wal.parse(data)
    assert parsed.status == "end" and [r.number for r in parsed.records] == [5, 6]
    assert parsed.records[1].event == ev(2)
    assert wal.record_size(ev(1)) == len(wal.encode(1, ev(1)))
    assert wal.parse(data, after=5).status == "corrupt"  # an index that does not go up is damage


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0), flip=st.integers(min_value=0))
def test_parse_never_returns_a_damaged_record(cut: int, flip: int) -> None:
    data = bytearray(wal.encode_many(1, [ev(i) for i in range(1, 6)]))
    data[flip % len(data)] ^= 0x41
    parsed = wal.parse(bytes(data[: cut % (len(data) + 1)]))
    assert all(r.event == ev(r.number) for r in parsed.records)


def test_append_read_commit_trims_segments(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, fsync="batch", segment_bytes=4096)
    for i in range(0, 200, 10):
        sp.append([ev(n) for n in range(i + 1, i + 11)])
    assert len(segments(tmp_path)) > 2 and sp.unread == 200
    got = sp.read(150)
    assert [e.sequence for e in got] == list(range(1, 151)) and sp.unread == 50
    before = sp.bytes
    assert sp.commit(sp.last_read) > 0 and sp.bytes < before
    assert [e.sequence for e in sp.read(1000)] == list(range(151, 201))
    sp.sync()
    sp.close()


def test_restart_resends_only_what_was_not_committed(tmp_path: Path) -> None:
    sp = Spool(tmp_path, fsync="never", max_bytes=1 << 20)
    sp.append([ev(n) for n in range(1, 101)])
    sp.read(60)
    sp.commit(40)
    assert sp.pending == 60 and sp.unread == 40 and sp.outstanding == 20
    sp.close()
    again = Spool(tmp_path, fsync="never", max_bytes=1 << 20)
    assert again.report.clean and again.report.pending == 60 and again.report.delivered == 40
    assert [e.sequence for e in again.read(1000)] == list(range(41, 101))
    again.append([ev(101)])  # new indexes continue after the old ones
    assert [e.sequence for e in again.read(10)] == [101]
    again.close()


def test_a_second_process_cannot_share_the_directory(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    with pytest.raises(SinkError, match="in use"):
        Spool(tmp_path)
    sp.close()


def test_records_lost_in_a_damaged_segment_before_the_newest_are_named(tmp_path: Path) -> None:
    """Counted, and said which: the damaged segment's own problem names only where it is damaged."""
    sp = Spool(tmp_path, fsync="never", max_bytes=1 << 20, segment_bytes=4096)
    for i in range(0, 200, 10):
        sp.append([ev(n) for n in range(i + 1, i + 11)])
    sp.close()
    first, second = segments(tmp_path)[:2]
    records = wal.parse(first.read_bytes()[len(wal.MAGIC):], after=0).records
    kept, next_base = 12, int(second.name.split(".")[0])
    size = len(wal.MAGIC) + sum(wal.record_size(r.event) for r in records[:kept])
    os.truncate(first, size + 5)  # inside record 13's header
    again = Spool(tmp_path)
    assert again.report.damaged == next_base - 1 - kept
    assert f"records {kept + 1} to {next_base - 1} lost: {first.name} was damaged, and no other file holds them" \
        in again.report.problems, again.report.problems
    got = [e.sequence for e in again.read(1000)]
    assert got == list(range(1, kept + 1)) + list(range(next_base, 201))
    again.close()


def test_torn_tail_is_quarantined_and_the_rest_kept(tmp_path: Path) -> None:
    sp = Spool(tmp_path, fsync="never")
    sp.append([ev(n) for n in range(1, 21)])
    seg = segments(tmp_path)[-1]
    sp.close()
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 7)  # the last record is cut short
    again = Spool(tmp_path)
    assert again.report.pending == 19 and len(again.report.quarantined) == 1
    assert "truncated" in again.report.problems[0]
    assert Path(again.report.quarantined[0]).parent.name == "quarantine"
    assert [e.sequence for e in again.read(100)] == list(range(1, 20))
    again.close()


def test_damage_in_the_middle_keeps_the_records_after_it(tmp_path: Path) -> None:
    sp = Spool(tmp_path, fsync="never")
    sp.append([ev(n) for n in range(1, 31)])
    seg = segments(tmp_path)[-1]
    sp.close()
    data = bytearray(seg.read_bytes())
    at = len(wal.MAGIC) + 10 * wal.record_size(ev(1)) + 20
    data[at : at + 5] = b"\xff" * 5  # inside record 11
    seg.write_bytes(bytes(data))
    old_mask = os.umask(0o022)  # a usual umask, which would let a plain open() make the file readable by all
    try:
        again = Spool(tmp_path)
    finally:
        os.umask(old_mask)
    assert [e.sequence for e in again.read(100)] == [n for n in range(1, 31) if n != 11]
    assert again.report.corrupt_bytes == wal.record_size(ev(11)) and "CRC" in again.report.problems[0]
    assert again.report.damaged == 1
    assert seg.stat().st_mode & 0o777 == 0o600  # the clean copy holds whole events: its owner's only
    again.close()
    third = Spool(tmp_path)  # the clean copy is clean
    assert third.report.clean and third.report.pending == 29
    third.close()


@pytest.mark.parametrize("at", [0, 5, len(wal.MAGIC) - 1])
def test_a_damaged_segment_header_keeps_the_records_after_it(tmp_path: Path, at: int) -> None:
    sp = Spool(tmp_path, fsync="never")
    sp.append([ev(n) for n in range(1, 21)])
    seg = segments(tmp_path)[-1]
    sp.close()
    data = bytearray(seg.read_bytes())
    data[at] ^= 0x20
    seg.write_bytes(bytes(data))
    again = Spool(tmp_path)
    assert [e.sequence for e in again.read(100)] == list(range(1, 21))
    assert "damaged segment header" in again.report.problems[0] and len(again.report.quarantined) == 1
    again.close()
    third = Spool(tmp_path)  # rewritten with a good header
    assert third.report.clean and third.report.pending == 20
    third.close()


def test_garbage_files_and_a_bad_cursor_never_stop_a_start(tmp_path: Path) -> None:
    (tmp_path / f"{1:020d}.wal").write_bytes(os.urandom(3000))
    (tmp_path / f"{9:020d}.wal").write_bytes(b"")
    (tmp_path / "cursor").write_bytes(b"\x00\x01")
    sp = Spool(tmp_path)
    assert sp.report.pending == 0 and len(sp.report.quarantined) == 1
    assert any("cursor" in p for p in sp.report.problems)
    sp.append([ev(1)])
    assert [e.sequence for e in sp.read(5)] == [1]
    sp.close()


def test_evict_oldest_counts_unread_records_and_keeps_what_is_in_flight(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    for i in range(1, 201, 10):
        sp.append([ev(k) for k in range(i, i + 10)])
    counts = [len(wal.parse(p.read_bytes(), len(wal.MAGIC)).records) for p in sorted(tmp_path.glob("*.wal"))]
    assert len(counts) >= 3
    sp.read(3)  # handed to the sink, not confirmed: in flight
    assert sp.evict_oldest() == counts[1] and sp.evicted == counts[1]  # the oldest not in flight
    sp.commit(3)  # confirmed: what is left of the first segment may go now
    assert sp.evict_oldest() == counts[0] - 3
    first_kept = sum(counts[:2]) + 1
    assert [e.sequence for e in sp.read(1000)] == list(range(first_kept, 201))
    sp.close()


def test_evict_oldest_evicts_nothing_when_everything_is_in_flight(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    sp.append([ev(i) for i in range(1, 6)])
    sp.read(10)
    assert sp.evict_oldest() is None and sp.evicted == 0 and sp.pending == 5
    kept = [n for p in sorted(tmp_path.glob("*.wal")) for n in
            (r.event.sequence for r in wal.parse(p.read_bytes(), len(wal.MAGIC)).records)]
    assert kept == [1, 2, 3, 4, 5]  # their durable copy stays until the sink confirms them
    sp.close()


def test_a_finished_segment_is_freed_on_commit_before_the_reader_moves_on(tmp_path: Path) -> None:
    """Otherwise a full spool under ``block`` waits for a read that waits for a put."""
    sp = Spool(tmp_path, max_bytes=65536, segment_bytes=4096)
    n = 4096 // wal.record_size(ev(1)) + 1
    sp.append([ev(i) for i in range(1, n + 1)])  # the first segment, full
    sp.append([ev(n + 1)])  # starts the second
    assert len(sp.read(n)) == n  # the reader stops at the end of the first segment
    assert sp.commit(n) > 0 and len(segments(tmp_path)) == 1
    assert [e.sequence for e in sp.read(10)] == [n + 1]
    sp.close()


def test_a_start_that_fails_releases_the_directory(tmp_path: Path) -> None:
    """An OS error while opening must not leave the lock held: the next attempt (a reload) has to succeed."""
    d = tmp_path / "spool"
    d.mkdir()
    (d / f"{1:020d}.wal").write_bytes(b"not a segment")
    blocker = d / "quarantine"
    blocker.write_text("a file where the damaged segment would be moved: moving it aside fails")
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        Spool(d)
    assert len(os.listdir("/proc/self/fd")) == fds
    blocker.unlink()
    Spool(d).close()


def test_a_new_segment_that_cannot_be_made_is_a_sink_error_and_nothing_is_lost(tmp_path: Path) -> None:
    """The spool queue retries a SinkError; an OSError from a segment rollover would end the sink's worker."""
    sp = Spool(tmp_path, max_bytes=1 << 20, fsync="batch", segment_bytes=4096)
    n = 0
    while sp._tail.size < sp.segment_bytes:
        n += 1
        sp.append([ev(n)])
    blocker = tmp_path / f"{sp.next_index:020d}.wal"
    blocker.mkdir()  # where the next segment goes: opening it fails
    with pytest.raises(SinkError, match="write failed"):
        sp.append([ev(n + 1)])
    blocker.rmdir()
    sp.append([ev(n + 1)])
    assert [e.sequence for e in sp.read(1000)] == list(range(1, n + 2))
    sp.sync()  # every descriptor it holds is still a good one
    sp.close()
