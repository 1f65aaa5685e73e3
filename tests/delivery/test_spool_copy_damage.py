"""Copies of segments meeting damage: a record intact in any file is present, so damage in a copy (or in the
segment, when a copy holds the record intact) loses nothing; only records no file holds intact are lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.pipeline import wal
from agent.pipeline.spool import Spool
from tests.delivery.test_spool_copies import name, numbers, stopped
from tests.delivery.test_spool_damage import ev, segments


def flip_second_record(path: Path) -> int:
    """Damage the second record of segment ``path``; returns its number."""
    raw = bytearray(path.read_bytes())
    second = wal.parse(bytes(raw), len(wal.MAGIC)).records[1]
    raw[second.start + wal.HEADER + 30] ^= 0xFF
    path.write_bytes(bytes(raw))
    return second.number


def cut_in_second_record(path: Path) -> None:
    second = wal.parse(path.read_bytes(), len(wal.MAGIC)).records[1]
    with open(path, "r+b") as f:
        f.truncate(second.start + 20)


def all_sent_once(tmp_path: Path) -> None:
    """A start after the first: nothing new to report, every record sent once, in order."""
    again = Spool(tmp_path)
    assert again.report.clean, again.report.problems
    assert [e.sequence for e in again.read(1000)] == list(range(1, 201))
    again.close()


@pytest.mark.parametrize("damage", ["flipped", "cut short"])
def test_damage_in_a_copy_under_a_later_name_loses_nothing(tmp_path: Path, damage: str) -> None:
    segs = stopped(tmp_path, 200)
    original = segs[1]
    held = numbers(original)
    dest = tmp_path / name(10_000)
    shutil.copy(original, dest)
    flip_second_record(dest) if damage == "flipped" else cut_in_second_record(dest)
    sp = Spool(tmp_path)
    report = sp.report
    assert (report.missing, report.damaged, report.pending) == (0, 0, 200), report.problems
    assert len(report.problems) == 1 and report.problems[0].startswith(f"{dest.name}@"), report.problems
    assert f"records {held[0]} to " in report.problems[0] and "the spool already has" in report.problems[0]
    assert not dest.exists() and all(p.exists() for p in segs)
    assert [e.sequence for e in sp.read(1000)] == list(range(1, 201))
    sp.close()
    all_sent_once(tmp_path)


def test_a_record_damaged_in_a_segment_is_taken_from_a_copy_that_holds_it_intact(tmp_path: Path) -> None:
    segs = stopped(tmp_path, 200)
    original = segs[1]
    held = numbers(original)
    dest = tmp_path / name(10_000)
    shutil.copy(original, dest)
    assert flip_second_record(original) in held
    sp = Spool(tmp_path)
    report = sp.report
    assert (report.missing, report.damaged, report.pending) == (0, 0, 200), report.problems
    assert report.duplicates == len(held)
    damage, copy = report.problems
    assert damage.startswith(f"{original.name}@") and "CRC mismatch" in damage
    assert damage.endswith(f"{len(held)} records kept; 1 taken from {dest.name})")  # the damaged one, from the copy
    assert copy == (f"{dest.name}: holds only records {held[0]} to {held[-1]}, which the spool already has "
                    f"({original.name}): a copy, set aside, not sent again")
    assert [e.sequence for e in sp.read(1000)] == list(range(1, 201))
    sp.close()
    assert numbers(original) == held and not dest.exists()
    all_sent_once(tmp_path)


def test_the_oldest_segment_damaged_with_its_copy_renamed_ahead_loses_nothing(tmp_path: Path) -> None:
    segs = stopped(tmp_path, 200)
    first = segs[0]
    held = numbers(first)
    moved = first.rename(tmp_path / name(10_000))
    shutil.copy(moved, first)
    flip_second_record(first)
    sp = Spool(tmp_path)
    report = sp.report
    assert (report.missing, report.damaged, report.pending) == (0, 0, 200), report.problems
    assert report.duplicates == len(held) and not moved.exists()
    assert [e.sequence for e in sp.read(1000)] == list(range(1, 201))
    sp.close()
    assert numbers(first) == held
    all_sent_once(tmp_path)


def test_only_a_file_not_named_by_its_first_record_is_called_a_copy(tmp_path: Path) -> None:
    """Everything delivered; the genuine oldest segment is put back, and a copy of the second under an earlier
    name: the copy is set aside and named, the segment left behind once delivered is removed as before."""
    saved = tmp_path / "saved"
    saved.mkdir()
    d = tmp_path / "spool"
    sp = Spool(d, max_bytes=1 << 20, fsync="never", segment_bytes=4096)
    for i in range(1, 201, 10):
        sp.append([ev(k) for k in range(i, i + 10)])
    first, second = segments(d)[:2]
    shutil.copy(first, saved / first.name)
    shutil.copy(second, saved / second.name)
    held = numbers(second)
    assert len(sp.read(1000)) == 200
    sp.commit(200)
    sp.close()
    shutil.copy(saved / first.name, first)
    copy = d / name(0)
    shutil.copy(saved / second.name, copy)
    again = Spool(d)
    report = again.report
    assert report.problems == (f"{copy.name}: holds only records {held[0]} to {held[-1]}, which were delivered "
                               "already: a copy, set aside, not sent again",)
    assert len(report.quarantined) == 1 and Path(report.quarantined[0]).name.startswith(copy.name)
    assert not first.exists() and not copy.exists()
    assert (report.pending, report.missing, report.damaged) == (0, 0, 0)
    again.close()


def test_a_crash_while_a_damaged_segment_is_replaced_loses_none_of_its_intact_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean copy of a damaged segment is written and made durable while the segment is still in place, and
    the segment is linked aside, not moved: a start killed before the copy is renamed in leaves the segment
    where it was, and the next start salvages it again, losing only its damaged record."""
    import os

    from agent.pipeline import salvage

    segs = stopped(tmp_path, 200)
    damaged = flip_second_record(segs[2])
    real_replace = os.replace

    def crash_before_the_copy_is_renamed_in(src: object, dst: object) -> None:
        if str(src).endswith(".wal.tmp"):
            raise KeyboardInterrupt("killed")  # as a SIGKILL would leave it: nothing after this runs
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(salvage.os, "replace", crash_before_the_copy_is_renamed_in)
    with pytest.raises(KeyboardInterrupt):
        Spool(tmp_path)
    monkeypatch.setattr(salvage.os, "replace", real_replace)
    assert segs[2].exists()  # the damaged segment is still in place
    sp = Spool(tmp_path)
    assert sp.report.damaged == 1 and sp.report.missing == 0, sp.report.problems
    assert [e.sequence for e in sp.read(1000)] == [n for n in range(1, 201) if n != damaged]
    sp.close()
