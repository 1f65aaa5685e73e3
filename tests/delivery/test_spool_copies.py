"""A segment file copied into the spool under another name while the agent is stopped: its records carry
their own numbers, so a copy of records the spool holds (or delivered) is set aside and named, never counted
as lost, and nothing in it is sent twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.pipeline import wal
from agent.pipeline.spool import Spool
from tests.delivery.test_spool_damage import ev, segments, written


def numbers(path: Path) -> list[int]:
    return [r.number for r in wal.parse(path.read_bytes(), len(wal.MAGIC)).records]


def stopped(d: Path, n: int) -> list[Path]:
    """A stopped spool holding events 1..n in several 4 KiB segments."""
    written(d, n).close()
    segs = segments(d)
    assert len(segs) >= 5
    return segs


def name(base: int) -> str:
    return f"{base:020d}.wal"


def _set_aside(tmp_path: Path, dest: Path, original: Path, held: list[int]) -> Spool:
    """The spool started again over ``dest``, a copy of ``original`` (records ``held``): the copy is set aside
    whole, unchanged for inspection, and named as such; nothing is lost or counted twice."""
    again = Spool(tmp_path)
    report = again.report
    assert (report.missing, report.damaged, report.corrupt_bytes) == (0, 0, 0), report.problems
    assert report.duplicates == len(held) and report.pending == 200
    assert report.problems == (f"{dest.name}: holds only records {held[0]} to {held[-1]}, which the spool already "
                               f"has ({original.name}): a copy, set aside, not sent again",)
    assert len(report.quarantined) == 1 and not dest.exists()
    assert Path(report.quarantined[0]).read_bytes() == original.read_bytes()
    return again


def _all_once_then_clean(tmp_path: Path, again: Spool) -> None:
    """Every one of the 200 records is sent once, and the next start reports nothing new."""
    assert [e.sequence for e in again.read(1000)] == list(range(1, 201))  # each record once, nothing lost
    assert again.next_index == 201
    again.close()
    clean = Spool(tmp_path)  # reported once
    assert clean.report.clean and clean.report.pending == 200
    clean.close()


@pytest.mark.parametrize("where", ["after the newest", "between two"])
def test_a_segment_copied_under_a_later_name_is_set_aside_not_counted_lost(tmp_path: Path, where: str) -> None:
    segs = stopped(tmp_path, 200)
    original = segs[1]
    held = numbers(original)
    # after the newest, or between the fourth and fifth segments, named inside the records of the fourth
    dest = tmp_path / name(10_000 if where == "after the newest" else numbers(segs[3])[2])
    shutil.copy(original, dest)
    again = _set_aside(tmp_path, dest, original, held)
    _all_once_then_clean(tmp_path, again)


def test_a_copy_of_delivered_records_is_set_aside_and_nothing_is_sent_again(tmp_path: Path) -> None:
    """The original is gone (delivered, trimmed); a copy kept aside is put back under a later name."""
    saved = tmp_path / "saved.wal"
    sp = Spool(tmp_path / "spool", max_bytes=1 << 20, fsync="never", segment_bytes=4096)
    for i in range(1, 201, 10):
        sp.append([ev(k) for k in range(i, i + 10)])
    first = segments(tmp_path / "spool")[0]
    held = numbers(first)
    shutil.copy(first, saved)
    sp.read(60)
    sp.commit(60)
    sp.close()
    assert not first.exists()
    dest = tmp_path / "spool" / name(10_000)
    shutil.copy(saved, dest)
    again = Spool(tmp_path / "spool")
    report = again.report
    assert (report.missing, report.damaged, report.duplicates, report.pending) == (0, 0, len(held), 140)
    assert report.problems == (f"{dest.name}: holds only records {held[0]} to {held[-1]}, which were delivered "
                               "already: a copy, set aside, not sent again",)
    assert [e.sequence for e in again.read(1000)] == list(range(61, 201))
    again.close()


@pytest.mark.parametrize("which", ["the newest", "a middle one", "the oldest"])
def test_a_file_holding_records_not_seen_before_is_still_read(tmp_path: Path, which: str) -> None:
    """Records with numbers the spool does not hold are no copy: a segment renamed ahead keeps its records,
    read where they belong."""
    segs = stopped(tmp_path, 200)
    moved = {"the newest": segs[-1], "a middle one": segs[2], "the oldest": segs[0]}[which]
    moved.rename(tmp_path / name(10_000))
    again = Spool(tmp_path)
    report = again.report
    assert (report.duplicates, report.missing, report.damaged, report.pending) == (0, 0, 0, 200), report.problems
    assert report.clean
    assert [e.sequence for e in again.read(1000)] == list(range(1, 201))
    again.close()
    assert [p.name for p in segments(tmp_path) if numbers(p)] == [p.name for p in segs]  # named by its records again
    clean = Spool(tmp_path)
    assert clean.report.clean and clean.report.pending == 200
    clean.close()


@pytest.mark.parametrize("which", ["the newest", "a middle one"])
@pytest.mark.parametrize("where", ["before the oldest", "inside the records of the oldest"])
def test_a_segment_copied_under_an_earlier_name_is_set_aside_and_the_genuine_one_kept(
    tmp_path: Path, which: str, where: str
) -> None:
    """The segments are read in the order of their records, not of their names: the genuine segment is the one
    named by its own first record, the copy is set aside, and no genuine segment is taken for damage."""
    segs = stopped(tmp_path, 200)
    original = segs[-1] if which == "the newest" else segs[2]
    held = numbers(original)
    dest = tmp_path / name(0 if where == "before the oldest" else numbers(segs[0])[2])
    shutil.copy(original, dest)
    again = _set_aside(tmp_path, dest, original, held)
    assert all(p.exists() for p in segs)  # every genuine segment kept where it was
    _all_once_then_clean(tmp_path, again)


def test_a_copy_of_a_renamed_segment_under_the_name_of_its_first_record_is_set_aside(tmp_path: Path) -> None:
    """Both files start with the same record and neither is older by name: the one named by its first record is
    taken for the genuine one, the other set aside; every record is sent once either way."""
    segs = stopped(tmp_path, 200)
    held = numbers(segs[2])
    moved = segs[2].rename(tmp_path / name(10_000))  # renamed ahead: its records still tell where it belongs
    shutil.copy(moved, tmp_path / name(held[0]))
    again = Spool(tmp_path)
    report = again.report
    assert (report.missing, report.damaged, report.duplicates, report.pending) == (0, 0, len(held), 200)
    assert report.problems == (f"{moved.name}: holds only records {held[0]} to {held[-1]}, which the spool already "
                               f"has ({name(held[0])}): a copy, set aside, not sent again",)
    assert [e.sequence for e in again.read(1000)] == list(range(1, 201))
    again.close()


def test_a_copy_under_an_earlier_name_of_a_segment_since_damaged_stands_in_for_it(tmp_path: Path) -> None:
    """The copy holds every record, the segment itself lost its first: the copy's records are kept (where they
    belong, under the segment's name once the report is out), the damaged file is set aside, nothing is lost."""
    segs = stopped(tmp_path, 200)
    original = segs[2]
    held = numbers(original)
    shutil.copy(original, tmp_path / name(0))
    raw = bytearray(original.read_bytes())
    raw[len(wal.MAGIC) + wal.HEADER + 30] ^= 0xFF  # inside the first record: its CRC no longer matches
    original.write_bytes(bytes(raw))
    again = Spool(tmp_path)
    report = again.report
    assert (report.missing, report.damaged, report.duplicates, report.pending) == (0, 0, 0, 200), report.problems
    assert len(report.problems) == 1 and report.problems[0].startswith(f"{original.name}@8: CRC mismatch")
    assert [e.sequence for e in again.read(1000)] == list(range(1, 201))
    again.close()
    assert numbers(original) == held and not (tmp_path / name(0)).exists()
    clean = Spool(tmp_path)
    assert clean.report.clean and clean.report.pending == 200
    assert [e.sequence for e in clean.read(1000)] == list(range(1, 201))
    clean.close()
