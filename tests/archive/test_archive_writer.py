"""The archive writer: layout, checkpoints, rotation, compression, lock, resume, recovery, retention."""

from __future__ import annotations

import gzip
import os
import resource
import signal
import time
from pathlib import Path

import pytest

from agent.archive import layout
from agent.archive.policy import ArchiveOptions
from agent.archive.recovery import read_records
from agent.archive.verify import verify_archive
from agent.archive.writer import ArchiveWriter
from agent.errors import SinkError
from agent.signing.keys import SigningKey, VerifyKey
from tests.archive.archive_helpers import Clock, events, write_archive


def kinds(root: Path, n: int) -> list[str]:
    return [r["kind"] for r in read_records(layout.log_path(root, n))[1]]


def codes(report: object) -> list[str]:
    return [p.code for p in report.problems]  # type: ignore[attr-defined]


def test_round_trip_layout_and_verify(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    evs = events(key, 1, 120)
    w = write_archive(archive_dir, key, [evs[i:i + 10] for i in range(0, 120, 10)],
                      segment_max_bytes=30_000, checkpoint_every=25)
    listing = layout.scan(archive_dir)
    assert w.size == w.sealed == 120
    assert sorted(listing.gz) == list(range(1, w.segment)) and list(listing.events) == [w.segment]
    stored = b"".join(layout.read_events(p) for p in sorted(listing.gz.values()))
    stored += layout.read_events(listing.events[w.segment])
    assert stored == b"".join(e + b"\n" for e in evs)
    assert kinds(archive_dir, 1)[0] == "open" and kinds(archive_dir, 1)[-2:] == ["checkpoint", "close"]
    report = verify_archive(archive_dir, keys)
    assert report.ok, report.lines()
    s = report.totals
    assert (s.events, s.signed_ok, s.sealed, s.unsealed, s.tree_size) == (120, 120, 120, 0, 120)
    assert report.as_dict()["ok"] is True


def test_checkpoint_every_n_and_every_t(archive_dir: Path, key: SigningKey) -> None:
    clock = Clock()
    w = ArchiveWriter(archive_dir, key, ArchiveOptions(checkpoint_every=10, checkpoint_interval=30), clock=clock)
    w.open()
    evs = events(key, 1, 25)
    w.append(evs[:9])
    assert w.sealed == 0
    w.append(evs[9:12])
    assert w.sealed == 12
    w.append(evs[12:14])
    w.tick()
    assert w.sealed == 12
    clock.t += 31
    w.tick()
    assert w.sealed == 14
    w.close()
    assert kinds(archive_dir, 1).count("checkpoint") == 2


def test_age_rotation_on_tick(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    clock = Clock()
    w = ArchiveWriter(archive_dir, key, ArchiveOptions(segment_max_age=60, compression="none"), clock=clock)
    w.open()
    w.tick()
    clock.t += 61
    w.tick()
    assert w.segment == 1, "an empty segment is never rotated"
    w.append(events(key, 1, 3))
    clock.t += 61
    w.tick()
    assert w.segment == 2
    w.close()
    assert layout.events_path(archive_dir, 1).exists()
    assert verify_archive(archive_dir, keys).ok


def test_one_writer_per_directory(archive_dir: Path, key: SigningKey) -> None:
    w = ArchiveWriter(archive_dir, key)
    w.open()
    other = ArchiveWriter(archive_dir, key)
    with pytest.raises(SinkError, match=f"in use by another writer \\(pid {os.getpid()}\\)"):
        other.open()
    w.close()
    other.open()
    other.close()


def test_a_new_archive_needs_a_directory_of_its_own(archive_dir: Path, key: SigningKey,
                                                   keys: dict[str, VerifyKey]) -> None:
    """A file the writer did not write would fail the archive's verification for good: a directory holding
    one is refused before anything is written; an archive that exists is resumed whatever was added since."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    (archive_dir / "notes.txt").write_text("an operator's file")
    with pytest.raises(SinkError, match=r"not an archive and not empty .*notes\.txt"):
        ArchiveWriter(archive_dir, key).open()
    assert sorted(p.name for p in archive_dir.iterdir()) == ["notes.txt"]
    (archive_dir / "notes.txt").unlink()
    write_archive(archive_dir, key, [events(key, 1, 5)])
    (archive_dir / "added.txt").write_text("added later")
    w = ArchiveWriter(archive_dir, key)
    w.open()  # resumed; its verification names the file
    w.close()
    assert "unexpected-file" in codes(verify_archive(archive_dir, keys))


def test_resume_continues_the_tree(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    write_archive(archive_dir, key, [events(key, 1, 30)], origin="example.org/a")
    w = write_archive(archive_dir, key, [events(key, 31, 30)], origin="example.org/a")
    assert w.size == 60 and w.origin == "example.org/a"
    with pytest.raises(SinkError, match="origin"):
        write_archive(archive_dir, key, [], origin="example.org/b")
    report = verify_archive(archive_dir, keys)
    assert report.ok and report.totals.origin == "example.org/a" and report.totals.sealed == 60


def crash(w: ArchiveWriter) -> None:
    """Drop the writer as a killed process would: no checkpoint, no close record, fds just gone."""
    w._release()


def test_torn_event_line_is_cut_and_recorded(archive_dir: Path, key: SigningKey,
                                             keys: dict[str, VerifyKey]) -> None:
    w = ArchiveWriter(archive_dir, key, ArchiveOptions(checkpoint_every=5))
    w.open()
    w.append(events(key, 1, 5))
    w.append(events(key, 6, 2))
    crash(w)
    ev = layout.events_path(archive_dir, 1)
    torn = events(key, 8, 1)[0][:100]
    with open(ev, "ab") as f:
        f.write(torn)
    before = verify_archive(archive_dir, keys)
    assert "unsealed" in codes(before) and any(n.code == "torn-tail" for n in before.notes)
    w = ArchiveWriter(archive_dir, key, ArchiveOptions(checkpoint_every=5))
    w.open()
    assert [(c.file, c.length) for c in w.cuts] == [(ev.name, 100)]
    assert w.size == w.sealed == 7, "the complete lines are kept and sealed at once"
    w.append(events(key, 8, 3))
    w.close()
    report = verify_archive(archive_dir, keys)
    assert report.ok, report.lines()
    assert report.totals.cuts == 1 and [n.code for n in report.notes] == ["cut", "unclean-restart"]


def test_torn_record_line_is_cut_and_recorded(archive_dir: Path, key: SigningKey,
                                              keys: dict[str, VerifyKey]) -> None:
    w = write_archive(archive_dir, key, [events(key, 1, 4)])
    with open(layout.log_path(archive_dir, w.segment), "ab") as f:
        f.write(b'{"kind":"checkp')
    w = write_archive(archive_dir, key, [events(key, 5, 2)])
    assert len(w.cuts) == 1 and w.cuts[0].file.endswith(".log")
    assert verify_archive(archive_dir, keys).ok


def test_interrupted_rotation_and_compression_are_finished(archive_dir: Path, key: SigningKey,
                                                           keys: dict[str, VerifyKey]) -> None:
    write_archive(archive_dir, key, [events(key, 1, 20)], segment_max_bytes=5000)
    # as if the crash came after the close record, before the next segment was opened ...
    layout.log_path(archive_dir, 2).unlink()
    layout.events_path(archive_dir, 2).unlink()
    # ... and before the plain events file of the closed segment was removed, with a temporary left over
    gz = layout.gz_path(archive_dir, 1)
    layout.events_path(archive_dir, 1).write_bytes(layout.read_events(gz))
    gz.write_bytes(gz.read_bytes()[:40])  # the compressed copy itself was not complete
    (archive_dir / (gz.name + ".tmp")).write_bytes(b"partial")
    w = write_archive(archive_dir, key, [events(key, 21, 3)], segment_max_bytes=5000)
    listing = layout.scan(archive_dir)
    assert not listing.tmp and 1 not in listing.events and 1 in listing.gz
    assert w.size == 23
    assert verify_archive(archive_dir, keys).ok


def test_body_with_newline_is_refused_whole(archive_dir: Path, key: SigningKey) -> None:
    w = ArchiveWriter(archive_dir, key)
    w.open()
    with pytest.raises(SinkError, match="newline"):
        w.append([b'{"a":1}', b'{"b":\n2}'])
    assert w.size == 0 and layout.events_path(archive_dir, 1).stat().st_size == 0
    w.close()


def test_failed_write_is_cut_back(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    w = ArchiveWriter(archive_dir, key, ArchiveOptions(fsync="never"))
    w.open()
    w.append(events(key, 1, 2))
    size = layout.events_path(archive_dir, 1).stat().st_size
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 500, old_limit[1]))
        with pytest.raises(SinkError, match="cannot write events"):
            w.append(events(key, 3, 5))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert layout.events_path(archive_dir, 1).stat().st_size == size and w.size == 2
    w.append(events(key, 3, 5))
    w.close()
    assert verify_archive(archive_dir, keys).ok


def test_retention_by_size_keeps_the_rest_verifiable(archive_dir: Path, key: SigningKey,
                                                     keys: dict[str, VerifyKey]) -> None:
    evs = events(key, 1, 100)
    w = write_archive(archive_dir, key, [evs[i:i + 5] for i in range(0, 100, 5)], segment_max_bytes=4000,
                      compression="none", retain_bytes=20_000)
    listing = layout.scan(archive_dir)
    assert min(listing.numbers()) > 1 and w.segment == max(listing.numbers())
    total = sum(listing.segment_bytes(n) for n in listing.numbers())
    assert total <= 20_000 + 10_000
    report = verify_archive(archive_dir, keys)
    assert report.ok, report.lines()
    assert report.totals.retained_from > 0
    assert report.totals.retained_from + report.totals.events == 100
    assert any(n.code == "retention" for n in report.notes)


def test_retention_by_age(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    clock = Clock(time.time())
    opts = ArchiveOptions(retain_age=3600, compression="gzip")
    w = ArchiveWriter(archive_dir, key, opts, clock=clock)
    w.open()
    for i in range(3):
        w.append(events(key, 1 + 10 * i, 10))
        w.rotate()
    old = clock.t - 7200
    for n in (1, 2):
        os.utime(layout.log_path(archive_dir, n), (old, old))
    clock.t += 120
    w.tick()
    assert sorted(layout.scan(archive_dir).numbers()) == [3, 4]
    w.append(events(key, 31, 5))
    w.close()
    report = verify_archive(archive_dir, keys)
    assert report.ok, report.lines()
    assert report.totals.retained_from == 20 and report.totals.sealed == 15


def test_retention_leftovers_are_removed_on_restart(archive_dir: Path, key: SigningKey,
                                                    keys: dict[str, VerifyKey]) -> None:
    evs = events(key, 1, 60)
    write_archive(archive_dir, key, [evs[i:i + 5] for i in range(0, 60, 5)], segment_max_bytes=3000,
                  compression="none", retain_bytes=12_000)
    first = min(layout.scan(archive_dir).numbers())
    # a crash between the retention record and the unlinks leaves the removed segment behind
    log = layout.log_path(archive_dir, first - 1)
    log.write_text("")
    report = verify_archive(archive_dir, keys)
    assert report.ok and any(n.code == "retained-present" for n in report.notes)
    write_archive(archive_dir, key, [], compression="none")
    assert not log.exists()


def test_compressed_segments_are_plain_gzip(archive_dir: Path, key: SigningKey) -> None:
    evs = events(key, 1, 10)
    write_archive(archive_dir, key, [evs], segment_max_bytes=100)
    with gzip.open(layout.gz_path(archive_dir, 1), "rb") as f:
        assert f.read() == b"".join(e + b"\n" for e in evs)


def test_sequence_jump_after_a_restart_is_a_note_and_within_a_run_a_problem(archive_dir: Path, key: SigningKey,
                                                                             keys: dict[str, VerifyKey]) -> None:
    w = ArchiveWriter(archive_dir, key)
    w.open()
    w.append(events(key, 1, 5))
    crash(w)
    # the next run skips the numbers its predecessor had reserved, as the pipeline's sequence store does
    write_archive(archive_dir, key, [events(key, 101, 3)])
    report = verify_archive(archive_dir, keys)
    assert report.ok, report.lines()
    assert [n.code for n in report.notes] == ["unclean-restart", "sequence-gap-after-crash"]
    # after a clean stop: numbers a run that wrote to other sinks only used meanwhile
    write_archive(archive_dir, key, [events(key, 201, 1)])
    report = verify_archive(archive_dir, keys)
    assert report.ok, report.lines()
    assert [n.code for n in report.notes][-1] == "sequence-gap-between-runs"
    # within one run, every number the archive did not get is missing from it
    write_archive(archive_dir, key, [events(key, 202, 2), events(key, 301, 1)])
    assert codes(verify_archive(archive_dir, keys)) == ["sequence-gap"]


def test_unaccounted_events_are_never_overwritten(archive_dir: Path, key: SigningKey) -> None:
    write_archive(archive_dir, key, [events(key, 1, 10)], segment_max_bytes=5000)
    # segment 2 was opened at the rotation; lose its log but leave events in its file
    layout.log_path(archive_dir, 2).unlink()
    stray = events(key, 11, 1)[0] + b"\n"
    layout.events_path(archive_dir, 2).write_bytes(stray)
    for _ in range(2):
        with pytest.raises(SinkError, match="no record accounts for"):
            write_archive(archive_dir, key, [])
    assert layout.events_path(archive_dir, 2).read_bytes() == stray
    assert not layout.log_path(archive_dir, 2).exists()


def test_a_cut_is_never_made_without_being_recorded(archive_dir: Path, key: SigningKey,
                                                    keys: dict[str, VerifyKey]) -> None:
    w = ArchiveWriter(archive_dir, key, ArchiveOptions(origin="example.org/a"))
    w.open()
    w.append(events(key, 1, 3))
    crash(w)
    ev = layout.events_path(archive_dir, 1)
    with open(ev, "ab") as f:
        f.write(b'{"torn')
    torn_size = ev.stat().st_size
    with pytest.raises(SinkError, match="origin"):
        write_archive(archive_dir, key, [], origin="example.org/b")
    assert ev.stat().st_size == torn_size, "a writer that gives up leaves the torn line for the next one"
    w = write_archive(archive_dir, key, [events(key, 4, 1)], origin="example.org/a")
    assert len(w.cuts) == 1
    report = verify_archive(archive_dir, keys)
    assert report.ok and report.totals.cuts == 1


def test_an_open_that_fails_unexpectedly_releases_the_lock(archive_dir: Path, key: SigningKey,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry must meet the real failure again, not itself as 'another writer'."""
    from agent.archive import writer as writer_mod

    def broken(*_a: object, **_k: object) -> None:
        raise ValueError("max() arg is an empty sequence")

    monkeypatch.setattr(writer_mod, "recover", broken)
    w = ArchiveWriter(archive_dir, key)
    for _ in range(2):
        with pytest.raises(ValueError, match="empty sequence"):
            w.open()
    assert not w.is_open


def test_the_witness_keeps_a_start_from_hiding_removed_newest_segments(archive_dir: Path, key: SigningKey,
                                                                       keys: dict[str, VerifyKey],
                                                                       tmp_path: Path) -> None:
    """The archive alone cannot show its newest segments removed after a clean stop: the next start would
    take the closed one before them for a crash in a rotation. The witness, outside the archive, can."""
    witness = tmp_path / "state" / "archive-witness" / "a.json"
    evs = events(key, 1, 30)
    w = ArchiveWriter(archive_dir, key, ArchiveOptions(segment_max_bytes=9000, compression="none"), witness=witness)
    w.open()
    for b in (evs[:10], evs[10:20], evs[20:]):
        w.append(b)
    w.close()
    newest = max(layout.scan(archive_dir).numbers())
    assert newest >= 2 and witness.exists()
    # a crash just after a rotation is no removal: the witness notes a segment only once it exists
    again = ArchiveWriter(archive_dir, key, ArchiveOptions(compression="none"), witness=witness)
    again.open()
    again.rotate()
    crash(again)
    third = ArchiveWriter(archive_dir, key, ArchiveOptions(compression="none"), witness=witness)
    third.open()
    third.close()
    # the newest segment removed while no writer had the archive
    newest = max(layout.scan(archive_dir).numbers())
    for p in (layout.log_path(archive_dir, newest), layout.events_path(archive_dir, newest)):
        p.unlink(missing_ok=True)
    before = sorted(p.name for p in archive_dir.iterdir())
    with pytest.raises(SinkError, match=f"this host wrote up to segment {newest} .* its newest part was removed"):
        ArchiveWriter(archive_dir, key, ArchiveOptions(compression="none"), witness=witness).open()
    assert sorted(p.name for p in archive_dir.iterdir()) == before
    # without the witness (another state directory) it is only what the archive shows
    blind = ArchiveWriter(archive_dir, key, ArchiveOptions(compression="none"))
    blind.open()
    blind.close()


def test_an_archive_started_afresh_in_the_same_place_is_no_removal(archive_dir: Path, key: SigningKey,
                                                                  tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    witness = tmp_path / "w.json"
    first = ArchiveWriter(archive_dir, key, witness=witness)
    first.open()
    first.append(events(key, 1, 10))
    first.close()
    assert witness.exists()
    for p in archive_dir.iterdir():
        p.unlink()
    w = ArchiveWriter(archive_dir, key, witness=witness)
    w.open()  # a new origin: the witness of the old one does not apply, and the change is said
    w.append(events(key, 11, 2))
    w.close()
    assert f"this host wrote archive {first.origin} here, up to segment 1; the directory now holds {w.origin}" \
        in caplog.text


def test_the_verdict_counts_in_words_that_agree(archive_dir: Path, key: SigningKey,
                                                keys: dict[str, VerifyKey]) -> None:
    write_archive(archive_dir, key, [events(key, 1, 1)])
    verdict = verify_archive(archive_dir, keys).verdict()
    assert verdict.startswith("OK: 1 event in 1 segment, 1 signature valid, 1 sealed by 1 checkpoint"), verdict
    assert verdict.endswith("0 problems")
