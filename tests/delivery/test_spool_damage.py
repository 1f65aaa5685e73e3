"""The spool meeting damage while it runs, and segments missing at start: the rest is kept, the loss named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import SinkError
from agent.model import Event
from agent.pipeline import wal
from agent.pipeline.spool import Spool


def ev(n: int) -> Event:
    return Event(id=f"id-{n}", source="hoststamp://h/p", type="t", sequence=n, body=b'{"n":%d,"pad":"%s"}' % (
        n, b"x" * 60))


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def sequences(path: Path) -> list[int]:
    return [r.event.sequence for r in wal.parse(path.read_bytes(), len(wal.MAGIC)).records]


def written(d: Path, n: int) -> Spool:
    """A spool holding events 1..n in several 4 KiB segments."""
    sp = Spool(d, max_bytes=1 << 20, fsync="never", segment_bytes=4096)
    for i in range(1, n + 1, 10):
        sp.append([ev(k) for k in range(i, min(i + 10, n + 1))])
    assert len(segments(d)) >= min(5, n // 40)
    return sp


def test_records_read_before_an_unreadable_segment_are_handed_out_first(tmp_path: Path) -> None:
    sp = written(tmp_path, 200)
    segs = segments(tmp_path)
    victim, in_it = segs[2], sequences(segs[2])
    before = [n for s in segs[:2] for n in sequences(s)]
    victim.unlink()
    victim.mkdir()
    assert [e.sequence for e in sp.read(1000)] == before  # not lost by the error that follows
    for _ in range(3):  # an error that may pass is raised, and nothing is skipped for it
        with pytest.raises(SinkError, match=f"cannot read {victim.name} at offset 8: Is a directory"):
            sp.read(1000)
    assert sp.lost == 0 and sp.pending == 200
    victim.rmdir()
    rest = [e.sequence for e in sp.read(1000)]
    assert rest == [n for n in range(before[-1] + 1, 201) if n not in in_it]
    assert sp.lost == len(in_it) and sp.pending == 200 - len(in_it)
    sp.commit(sp.last_read)
    assert sp.pending == 0
    sp.close()


@pytest.mark.parametrize("keep", [0, 3, 100])
def test_a_segment_cut_short_hands_out_what_is_left_and_counts_the_rest(tmp_path: Path, keep: int) -> None:
    sp = written(tmp_path, 200)
    victim = segments(tmp_path)[1]
    in_it = sequences(victim)
    size = {0: 0, 3: 3, 100: len(wal.MAGIC) + 3 * wal.record_size(ev(1)) + 100}[keep]
    os.truncate(victim, size)  # emptied, shorter than its magic, or inside its fourth record
    kept = in_it[:3] if keep == 100 else []
    got = [e.sequence for e in sp.read(1000)]
    assert got == [n for n in range(1, 201) if n not in in_it or n in kept]
    assert sp.lost == len(in_it) - len(kept) and sp.read_errors == 1
    sp.close()


def test_a_segment_removed_before_the_reader_gets_there_is_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sp = written(tmp_path, 200)
    assert len(sp.read(5)) == 5
    victim = segments(tmp_path)[2]
    in_it = sequences(victim)
    victim.unlink()
    got = [e.sequence for e in sp.read(1000)]
    assert got == [n for n in range(6, 201) if n not in in_it] and sp.lost == len(in_it)
    assert f"segment {victim.name}: removed; {len(in_it)} records in it lost" in caplog.text
    sp.commit(sp.last_read)
    sp.close()
    again = Spool(tmp_path)
    assert again.report.pending == 0 and again.report.clean
    again.close()


def test_the_segment_being_written_removed_is_written_back_when_the_reader_finds_it(tmp_path: Path) -> None:
    sp = written(tmp_path, 60)
    tail = segments(tmp_path)[-1]
    in_it = sequences(tail)
    tail.unlink()
    assert [e.sequence for e in sp.read(1000)] == list(range(1, 61)) and sp.lost == 0
    assert sequences(tail) == in_it  # back under its name, from the open file
    sp.append([ev(61)])
    assert [e.sequence for e in sp.read(1000)] == [61]
    sp.commit(sp.last_read)
    sp.close()


def test_the_segment_being_written_removed_is_written_back_at_a_clean_stop(tmp_path: Path) -> None:
    sp = written(tmp_path, 60)
    sp.sync()
    tail = segments(tmp_path)[-1]
    tail.unlink()
    sp.close()
    again = Spool(tmp_path)
    assert again.report.pending == 60 and again.report.missing == 0
    again.close()


def test_the_segment_being_written_removed_unread_is_written_back_before_more_is_appended(tmp_path: Path) -> None:
    """With the sink down the reader is not there to notice: the next append does, and puts the segment back
    under its name, so that what is acknowledged from then on survives a crash."""
    sp = written(tmp_path, 60)
    tail = segments(tmp_path)[-1]
    in_it = sequences(tail)
    tail.unlink()
    sp.append([ev(61)])
    assert sequences(tail)[: len(in_it)] == in_it  # on disk again, under its name (61 there or after it)
    sp.sync()
    os.close(sp._lock_fd)  # the process dies here: nothing more is written
    sp._lock_fd = -1
    again = Spool(tmp_path)
    assert again.report.missing == 0 and again.report.pending == 61
    assert [e.sequence for e in again.read(1000)] == list(range(1, 62))
    again.close()


def test_a_cursor_that_cannot_be_written_trims_nothing_and_is_retried(tmp_path: Path) -> None:
    sp = written(tmp_path, 200)
    sp.read(1000)
    on_disk = segments(tmp_path)
    saved = os.dup(sp._cursor_fd)
    readonly = os.open(tmp_path / "cursor", os.O_RDONLY)
    os.dup2(readonly, sp._cursor_fd)
    os.close(readonly)
    with pytest.raises(SinkError, match="cannot write the cursor"):
        sp.commit(150)
    assert segments(tmp_path) == on_disk
    with pytest.raises(SinkError, match="cannot write the cursor"):
        sp.commit(150)  # the same index again: still tried
    os.dup2(saved, sp._cursor_fd)
    os.close(saved)
    assert sp.commit(150) > 0 and len(segments(tmp_path)) < len(on_disk)
    assert sp.pending == 50
    sp.close()
    again = Spool(tmp_path)
    assert again.committed == 150 and again.report.pending == 50
    again.close()


def test_a_segment_missing_at_start_is_named_and_counted(tmp_path: Path) -> None:
    sp = written(tmp_path, 200)
    sp.read(20)
    sp.commit(20)
    sp.close()
    segs = segments(tmp_path)
    victim = segs[2]
    in_it = sequences(victim)
    assert in_it[0] > 20
    victim.unlink()
    again = Spool(tmp_path)
    assert again.report.missing == len(in_it)
    assert (f"records {in_it[0]} to {in_it[-1]} lost: no segment holds them (a segment removed, or cut "
            "short)") in again.report.problems
    assert again.report.pending == 180 - len(in_it)
    assert [e.sequence for e in again.read(1000)] == [n for n in range(21, 201) if n not in in_it]
    again.close()


@pytest.mark.parametrize("delivered", [150, 200])
def test_segments_delivered_and_trimmed_leave_no_gap_to_report(tmp_path: Path, delivered: int) -> None:
    """Delivered segments are gone, trimmed (or, all delivered, removed by hand, the newest among them): no loss."""
    sp = written(tmp_path, 200)
    sp.read(delivered)
    sp.commit(delivered)
    sp.close()
    if delivered == 200:
        for seg in segments(tmp_path):
            seg.unlink()
    again = Spool(tmp_path)
    assert again.report.clean and again.report.missing == 0 and again.report.pending == 200 - delivered
    again.close()


def test_records_the_start_up_salvage_lost_are_counted_as_dropped(tmp_path: Path) -> None:
    from agent.pipeline.spoolqueue import SpoolQueue
    from agent.pipeline.stats import PipelineStats
    from agent.pipeline.worker import SinkWorker
    from agent.sinks.memory import MemorySink

    sp = written(tmp_path, 200)
    sp.close()
    segs = segments(tmp_path)
    gone = sequences(segs[1])
    segs[1].unlink()  # a missing segment: its records are known lost
    data = bytearray(segs[3].read_bytes())
    hurt = sequences(segs[3])
    at = len(wal.MAGIC) + wal.record_size(ev(hurt[0])) + 20
    data[at : at + 4] = b"\xff" * 4  # the second record of another segment
    segs[3].write_bytes(bytes(data))
    again = Spool(tmp_path)
    assert (again.report.missing, again.report.damaged) == (len(gone), 1)
    q = SpoolQueue(again)
    SinkWorker(MemorySink(), q, PipelineStats().sink("mem"))
    assert q.dropped == {"spool_damaged": len(gone) + 1}
    reloaded = SpoolQueue(again)  # a reload's queue on the same spool: the start-up loss is counted already
    SinkWorker(MemorySink(), reloaded, PipelineStats().sink("mem"))
    assert reloaded.dropped == {}
    again.close()
    clean = Spool(tmp_path)  # the damaged segment was rewritten, the gaps closed: nothing is counted twice
    assert (clean.report.missing, clean.report.damaged) == (0, 0) and clean.report.clean
    assert clean.report.pending == 200 - len(gone) - 1
    assert [e.sequence for e in clean.read(1000)] == [n for n in range(1, 201) if n not in gone and n != hurt[1]]
    clean.close()


def test_a_gap_is_reported_once_not_at_every_start(tmp_path: Path) -> None:
    sp = written(tmp_path, 200)
    sp.read(30)
    sp.commit(30)  # the first records were delivered; the ones before the gap are not, all
    sp.close()
    segs = segments(tmp_path)
    gone = sequences(segs[2])
    segs[2].unlink()
    first = Spool(tmp_path)
    assert first.report.missing == len(gone) and first.report.pending == 170 - len(gone)
    first.close()
    for _ in range(2):  # a restart, a reload: the records before the gap are still waiting
        again = Spool(tmp_path)
        assert again.report.clean and again.report.missing == 0 and again.report.pending == 170 - len(gone)
        again.close()
    last = Spool(tmp_path)
    assert [e.sequence for e in last.read(1000)] == [n for n in range(31, 201) if n not in gone]
    last.close()


@pytest.mark.parametrize("where", ["after the last", "between two"])
def test_a_foreign_file_named_like_a_segment_is_set_aside_and_loses_nothing(tmp_path: Path, where: str) -> None:
    sp = written(tmp_path, 200)
    sp.close()
    second = int(segments(tmp_path)[1].name.split(".")[0])
    name = f"{99999 if where == 'after the last' else second - 1:020d}.wal"
    assert not (tmp_path / name).exists()
    (tmp_path / name).write_bytes(b"not a spool segment at all\n" * 10)
    (tmp_path / "notes.txt").write_text("an operator's file")
    again = Spool(tmp_path)
    report = again.report
    assert (report.missing, report.damaged, report.pending) == (0, 0, 200)
    assert len(report.quarantined) == 1 and "not a spool segment" in report.problems[0]
    assert (tmp_path / "notes.txt").read_text() == "an operator's file"  # not the spool's: left alone
    again.close()


def test_a_gap_found_by_a_start_that_then_fails_is_reported_by_the_next(tmp_path: Path) -> None:
    """The gap is closed only once reported: a start whose scan fails further on (here a damaged segment that
    cannot be moved aside, a file being where the quarantine directory goes) leaves it for the next start to
    report."""
    sp = written(tmp_path, 200)
    sp.close()
    segs = segments(tmp_path)
    gone = sequences(segs[2])
    segs[2].unlink()
    last, data = segs[-1], segs[-1].read_bytes()
    last.write_bytes(data[:-3] + b"\xff\xff\xff")
    (tmp_path / "quarantine").write_text("in the way")
    with pytest.raises(OSError):
        Spool(tmp_path)
    (tmp_path / "quarantine").unlink()
    last.write_bytes(data)
    again = Spool(tmp_path)
    assert again.report.missing == len(gone)
    again.close()


@pytest.mark.parametrize("content", [b"", wal.MAGIC], ids=["empty", "header-only"])
def test_an_empty_segment_named_far_ahead_loses_nothing(tmp_path: Path, content: bytes) -> None:
    sp = written(tmp_path, 200)
    sp.close()
    (tmp_path / f"{88888:020d}.wal").write_bytes(content)
    again = Spool(tmp_path)
    assert (again.report.missing, again.report.damaged, again.report.pending) == (0, 0, 200)
    assert not (tmp_path / f"{88888:020d}.wal").exists()
    again.close()


def test_a_rewind_after_damage_does_not_count_the_loss_again(tmp_path: Path) -> None:
    """A reload's new reader reads again what the old one was handed, not the damage the old one gave up on."""
    sp = written(tmp_path, 120)
    first = segments(tmp_path)[0]
    os.truncate(first, first.stat().st_size // 2)
    got = [e.sequence for e in sp.read(1000)]
    lost = sp.lost
    assert lost > 0 and sp.unread == 0
    assert sp.rewind() == len(got)
    again = [e.sequence for e in sp.read(1000)]
    assert again == got and sp.lost == lost and sp.unread == 0 and sp.pending == len(got)
    sp.close()


def test_a_rewind_after_the_segment_being_written_was_removed_reads_it_again(tmp_path: Path) -> None:
    sp = written(tmp_path, 60)
    sp.read(3)
    sp.commit(3)
    got = [e.sequence for e in sp.read(1000)]
    segments(tmp_path)[-1].unlink()
    assert sp.rewind() == len(got)
    assert [e.sequence for e in sp.read(1000)] == got and sp.lost == 0
    sp.close()


def test_evicting_a_segment_behind_the_one_in_flight_is_not_reported_missing_at_the_next_start(
        tmp_path: Path) -> None:
    sp = written(tmp_path, 120)
    sp.read(5)  # the sink holds 1..5, unconfirmed
    evicted = sp.evict_oldest()
    assert evicted and sp.evicted == evicted
    sp.close()
    again = Spool(tmp_path)
    assert again.report.missing == 0 and again.report.pending == 120 - evicted
    again.close()


def test_writing_back_a_removed_segment_leaves_a_running_sync_its_descriptor(tmp_path: Path) -> None:
    sp = written(tmp_path, 20)
    job, fds = sp.sync_begin()
    segments(tmp_path)[-1].unlink()
    sp.append([ev(21)])  # written back under its name; the old descriptor stays open for the job
    job()
    sp.sync_end(fds)
    sp.close()
    again = Spool(tmp_path)
    assert again.report.pending == 21
    again.close()


def test_a_rewind_that_cannot_read_again_keeps_the_cursor_so_nothing_is_committed_over(tmp_path: Path) -> None:
    sp = written(tmp_path, 120)
    segments(tmp_path)[0].unlink()  # removed before the old reader got there: its records are lost
    handed = [e.sequence for e in sp.read(1000)]
    assert sp.rewind() == 0  # the new reader cannot start where the cursor is
    sp.append([ev(k) for k in range(121, 126)])
    assert [e.sequence for e in sp.read(1000)] == list(range(121, 126))
    sp.commit(sp.last_read)  # held: what the old sink never confirmed is not committed over
    sp.close()
    again = Spool(tmp_path)
    assert [e.sequence for e in again.read(1000)] == [*handed, *range(121, 126)]
    again.close()


def test_a_segment_being_written_replaced_under_its_name_sends_new_records_to_a_new_one(tmp_path: Path) -> None:
    sp = written(tmp_path, 20)
    tail = segments(tmp_path)[-1]
    junk = tmp_path / "junk"
    junk.write_bytes(b"not ours")
    os.replace(junk, tail)  # the open file loses its name, and the name is taken: it cannot be written back
    sp.append([ev(21)])  # goes on, in a new segment
    assert sequences(segments(tmp_path)[-1]) == [21]
    sp.close()


def test_a_segment_being_written_cut_short_and_removed_is_not_written_back_wrongly(tmp_path: Path) -> None:
    sp = written(tmp_path, 20)
    sp.read(5)
    sp.commit(5)
    tail = segments(tmp_path)[-1]
    os.truncate(tail, tail.stat().st_size - 30)  # the last record cut
    tail.unlink()
    sp.append([ev(k) for k in range(21, 31)])
    got = [e.sequence for e in sp.read(1000)]
    assert got[-10:] == list(range(21, 31)) and sp.lost == 1
    sp.close()


@pytest.mark.parametrize("kind", ["directory", "fifo", "dangling link", "link to a segment"])
def test_an_entry_named_like_a_segment_that_is_not_a_file_is_set_aside_and_the_spool_starts(
        tmp_path: Path, kind: str) -> None:
    """Never refusing to start: what is not a regular file is moved aside unread (a FIFO would block the read for
    good), and every record of the real segments is still there."""
    sp = written(tmp_path, 200)
    sp.close()
    name = tmp_path / f"{99999:020d}.wal"
    if kind == "directory":
        name.mkdir()
    elif kind == "fifo":
        os.mkfifo(name)
    elif kind == "dangling link":
        name.symlink_to(tmp_path / "nowhere")
    else:
        name.symlink_to(segments(tmp_path)[0])
    (tmp_path / "x.wal.tmp").mkdir()  # where an interrupted rewrite leaves a file
    again = Spool(tmp_path)
    report = again.report
    assert (report.missing, report.damaged, report.pending) == (0, 0, 200)
    assert len(report.quarantined) == 2 and not name.exists() and not name.is_symlink()
    assert any("not a spool segment" in p for p in report.problems)
    assert [e.sequence for e in again.read(1000)] == list(range(1, 201))
    again.close()


@pytest.mark.parametrize("entry", ["lock", "cursor"])
def test_the_spools_own_files_as_directories_are_set_aside_and_the_spool_starts(tmp_path: Path, entry: str) -> None:
    sp = written(tmp_path, 50)
    sp.close()
    (tmp_path / entry).unlink()
    (tmp_path / entry).mkdir()
    again = Spool(tmp_path)
    assert any(p.startswith(f"{entry}: not a file") for p in again.report.problems)
    if entry == "cursor":
        assert any("cursor damaged" in p for p in again.report.problems)
    assert [e.sequence for e in again.read(1000)] == list(range(1, 51))
    again.close()


@pytest.mark.parametrize("delivered", [0, 20])
def test_the_newest_segment_removed_while_stopped_is_named_and_counted_once(tmp_path: Path, delivered: int) -> None:
    """No later segment shows the gap the newest one leaves: the spool's head says where it started and what it
    held. Its undelivered records are reported lost (and counted), once; new records are numbered after them."""
    sp = written(tmp_path, 200)
    if delivered:
        sp.read(delivered)
        sp.commit(delivered)
    sp.close()
    newest = segments(tmp_path)[-1]
    gone = sequences(newest)
    assert gone and gone[-1] == 200
    newest.unlink()
    again = Spool(tmp_path)
    assert again.report.missing == len(gone) and not again.report.clean
    assert (f"records {gone[0]} to 200 of the newest segment, {newest.name}, lost: no segment holds them (removed, "
            "or cut short)") in again.report.problems
    assert again.report.pending == 200 - delivered - len(gone)
    assert again.next_index > 200  # the lost records' numbers are not used again
    again.close()
    for _ in range(2):  # reported once: the next starts find nothing to say
        later = Spool(tmp_path)
        assert later.report.clean and later.report.missing == 0
        later.close()


def test_the_two_newest_segments_removed_are_each_counted_once(tmp_path: Path) -> None:
    sp = written(tmp_path, 200)
    sp.close()
    segs = segments(tmp_path)
    gone = sequences(segs[-2]) + sequences(segs[-1])
    segs[-2].unlink()
    segs[-1].unlink()
    again = Spool(tmp_path)
    assert again.report.missing == len(gone) and again.report.pending == 200 - len(gone)
    again.close()
