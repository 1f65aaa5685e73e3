"""Every kind of tampering with an archive is found by the verifier, and named."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import orjson
import pytest

from agent.archive import layout
from agent.archive.records import encode_record, parse_record
from agent.archive.verify import verify_archive
from agent.errors import SinkError, VerifyError
from agent.signing.keys import SigningKey, VerifyKey
from tests.archive.archive_helpers import SEGMENT_BYTES, events, sealed_archive, write_archive


@pytest.fixture
def arc(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> Path:
    sealed_archive(archive_dir, key)
    report = verify_archive(archive_dir, keys)
    assert report.ok, report.lines()
    assert sorted(layout.scan(archive_dir).numbers()) == [1, 2, 3, 4, 5]
    return archive_dir


def problems(root: Path, keys: dict[str, VerifyKey]) -> set[str]:
    report = verify_archive(root, keys)
    assert not report.ok
    assert report.lines()[-1].startswith("FAILED")
    return {p.code for p in report.problems}


def ev_lines(root: Path, n: int) -> list[bytes]:
    return layout.events_path(root, n).read_bytes().splitlines(keepends=True)


def put_lines(root: Path, n: int, lines: list[bytes]) -> None:
    layout.events_path(root, n).write_bytes(b"".join(lines))


def edit_data(line: bytes) -> bytes:
    doc = orjson.loads(line)
    doc["data"]["output"]["n"] += 1000
    return orjson.dumps(doc) + b"\n"


def rename_segment(root: Path, a: int, b: int) -> None:
    for path in (layout.events_path, layout.log_path):
        os.rename(path(root, a), path(root, b))


def test_edited_event_in_closed_segment(arc: Path, keys: dict[str, VerifyKey]) -> None:
    lines = ev_lines(arc, 2)
    lines[3] = edit_data(lines[3])
    put_lines(arc, 2, lines)
    assert {"event-signature", "root-mismatch", "segment-hash"} <= problems(arc, keys)


def test_edited_event_in_compressed_segment(archive_dir: Path, key: SigningKey,
                                            keys: dict[str, VerifyKey]) -> None:
    write_archive(archive_dir, key, [events(key, 1, 10), events(key, 11, 3)], segment_max_bytes=SEGMENT_BYTES)
    gz = layout.gz_path(archive_dir, 1)
    lines = layout.read_events(gz).splitlines(keepends=True)
    lines[0] = edit_data(lines[0])
    gz.write_bytes(gzip.compress(b"".join(lines)))
    assert {"event-signature", "root-mismatch", "segment-hash"} <= problems(archive_dir, keys)
    gz.write_bytes(b"not gzip at all")
    assert "unreadable" in problems(archive_dir, keys)


def test_edited_event_in_open_segment(arc: Path, keys: dict[str, VerifyKey]) -> None:
    lines = ev_lines(arc, 5)
    lines[-1] = edit_data(lines[-1])
    put_lines(arc, 5, lines)
    assert {"event-signature", "root-mismatch"} <= problems(arc, keys)


def test_validly_signed_event_replaced_by_another(arc: Path, keys: dict[str, VerifyKey]) -> None:
    lines = ev_lines(arc, 3)
    lines[4] = ev_lines(arc, 1)[4]
    put_lines(arc, 3, lines)
    found = problems(arc, keys)
    assert {"root-mismatch", "segment-hash", "sequence-order"} <= found
    assert "event-signature" not in found


def test_reordered_lines(arc: Path, keys: dict[str, VerifyKey]) -> None:
    lines = ev_lines(arc, 2)
    lines[2], lines[3] = lines[3], lines[2]
    put_lines(arc, 2, lines)
    assert {"root-mismatch", "segment-hash", "sequence-order"} <= problems(arc, keys)


def test_inserted_line(arc: Path, keys: dict[str, VerifyKey]) -> None:
    lines = ev_lines(arc, 2)
    lines.insert(5, lines[5])
    put_lines(arc, 2, lines)
    assert {"root-mismatch", "segment-count", "sequence-order"} <= problems(arc, keys)


def test_truncated_closed_segment(arc: Path, keys: dict[str, VerifyKey]) -> None:
    put_lines(arc, 3, ev_lines(arc, 3)[:-2])
    assert {"segment-count", "segment-hash", "missing-events"} <= problems(arc, keys)


def test_truncated_sealed_part_of_open_segment(arc: Path, keys: dict[str, VerifyKey]) -> None:
    put_lines(arc, 5, ev_lines(arc, 5)[:-1])
    assert "missing-events" in problems(arc, keys)


def test_deleted_middle_segment(arc: Path, keys: dict[str, VerifyKey]) -> None:
    layout.events_path(arc, 3).unlink()
    layout.log_path(arc, 3).unlink()
    found = problems(arc, keys)
    assert {"missing-segment", "sequence-gap"} <= found
    report = verify_archive(arc, keys)
    assert report.totals.events == 35, "the segments after the gap are still checked"
    assert report.totals.sealed > 20, "from the next segment's signed start on, against the checkpoints too"


@pytest.mark.parametrize("gone", [1, 3])
def test_after_a_deleted_segment_the_rest_is_still_checked_against_the_checkpoints(
        arc: Path, keys: dict[str, VerifyKey], gone: int) -> None:
    """A second change, after the deleted segment, that leaves every event's signature valid (an attribute added
    to a signed event) is still found: the tree resumes from the next segment's signed start."""
    layout.events_path(arc, gone).unlink()
    layout.log_path(arc, gone).unlink()
    lines = ev_lines(arc, 5)
    doc = orjson.loads(lines[0])
    doc["evil"] = "x"
    put_lines(arc, 5, [orjson.dumps(doc) + b"\n", *lines[1:]])
    assert {"missing-segment", "root-mismatch"} <= problems(arc, keys)


def test_deleted_newest_segment(arc: Path, keys: dict[str, VerifyKey]) -> None:
    layout.events_path(arc, 5).unlink()
    layout.log_path(arc, 5).unlink()
    assert problems(arc, keys) == {"ends-closed"}


def test_deleted_events_file_only(arc: Path, keys: dict[str, VerifyKey]) -> None:
    layout.events_path(arc, 2).unlink()
    assert {"missing-events"} <= problems(arc, keys)


def test_deleted_log_only(arc: Path, keys: dict[str, VerifyKey]) -> None:
    layout.log_path(arc, 2).unlink()
    assert problems(arc, keys) == {"missing-log"}


def test_renamed_events_file(arc: Path, keys: dict[str, VerifyKey]) -> None:
    p = layout.events_path(arc, 2)
    os.rename(p, p.with_name("seg-2.ndjson"))
    assert {"unexpected-file", "missing-events"} <= problems(arc, keys)


def test_renamed_segment_number(arc: Path, keys: dict[str, VerifyKey]) -> None:
    rename_segment(arc, 3, 9)
    assert {"missing-segment", "wrong-segment", "not-closed"} <= problems(arc, keys)


def test_swapped_segments(arc: Path, keys: dict[str, VerifyKey]) -> None:
    rename_segment(arc, 2, 99)
    rename_segment(arc, 3, 2)
    rename_segment(arc, 99, 3)
    assert {"wrong-segment", "chain", "segment-start"} <= problems(arc, keys)


def test_removed_checkpoint_record(arc: Path, keys: dict[str, VerifyKey]) -> None:
    log = layout.log_path(arc, 2)
    lines = log.read_bytes().splitlines(keepends=True)
    assert parse_record(lines[1].rstrip(b"\n"))["kind"] == "checkpoint"
    del lines[1]
    log.write_bytes(b"".join(lines))
    assert "chain" in problems(arc, keys)


def test_edited_checkpoint_record(arc: Path, keys: dict[str, VerifyKey]) -> None:
    log = layout.log_path(arc, 2)
    data = log.read_bytes()
    rec = parse_record(data.splitlines()[1])
    size = rec["note"].split("\n")[1]
    log.write_bytes(data.replace(f"\\n{size}\\n".encode(), f"\\n{int(size) - 1}\\n".encode(), 1))
    assert "record-signature" in problems(arc, keys)


def test_checkpoint_resigned_by_another_key(arc: Path, keys: dict[str, VerifyKey]) -> None:
    mallory = SigningKey.generate()
    log = layout.log_path(arc, 5)
    lines = log.read_bytes().splitlines()
    at = max(i for i, ln in enumerate(lines) if parse_record(ln)["kind"] == "checkpoint")
    lines[at] = encode_record(parse_record(lines[at]), mallory)
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert {"record-signature"} <= problems(arc, keys)


def test_events_appended_after_the_last_checkpoint(arc: Path, key: SigningKey,
                                                   keys: dict[str, VerifyKey]) -> None:
    with open(layout.events_path(arc, 5), "ab") as f:
        f.write(events(key, 46, 2)[0] + b"\n")
    report = verify_archive(arc, keys)
    assert [p.code for p in report.problems] == ["unsealed"]
    assert report.totals.unsealed == 1 and report.totals.signed_ok == 46


def test_untrusted_keys(arc: Path) -> None:
    other = SigningKey.generate().verify_key()
    found = problems(arc, {other.keyid: other})
    assert {"event-signature", "record-signature"} <= found


def test_sequence_gap(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    write_archive(archive_dir, key, [events(key, 1, 3) + events(key, 5, 2)])
    assert problems(archive_dir, keys) == {"sequence-gap"}


def test_deleted_retention_record(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    evs = events(key, 1, 60)
    write_archive(archive_dir, key, [evs[i:i + 5] for i in range(0, 60, 5)], segment_max_bytes=3000,
                  compression="none", retain_bytes=12_000)
    assert verify_archive(archive_dir, keys).ok
    for path in layout.scan(archive_dir).logs.values():
        lines = path.read_bytes().splitlines(keepends=True)
        kept = [ln for ln in lines if parse_record(ln.rstrip(b"\n"))["kind"] != "retention"]
        path.write_bytes(b"".join(kept))
    assert {"missing-segment", "chain"} <= problems(archive_dir, keys)


def test_extra_file_and_not_a_directory(arc: Path, keys: dict[str, VerifyKey]) -> None:
    (arc / "notes.txt").write_text("hello")
    assert problems(arc, keys) == {"unexpected-file"}
    with pytest.raises(VerifyError):
        verify_archive(arc / "notes.txt", keys)


def test_empty_directory(tmp_path: Path, keys: dict[str, VerifyKey]) -> None:
    assert problems(tmp_path, keys) == {"empty"}


def resign_checkpoint(root: Path, n: int, key: SigningKey, change: dict[str, object]) -> None:
    log = layout.log_path(root, n)
    lines = log.read_bytes().splitlines()
    at = next(i for i, ln in enumerate(lines) if parse_record(ln)["kind"] == "checkpoint")
    rec = parse_record(lines[at])
    rec.update(change)
    lines[at] = encode_record(rec, key)
    log.write_bytes(b"\n".join(lines) + b"\n")


def test_inconsistent_checkpoint_signed_by_the_host_key(arc: Path, key: SigningKey,
                                                         keys: dict[str, VerifyKey]) -> None:
    """What a faulty writer (or a thief of the key) could produce is still caught, and named."""
    rec = parse_record(layout.log_path(arc, 3).read_bytes().splitlines()[1])
    proof = list(rec["consistency"])
    proof[0] = proof[-1]
    resign_checkpoint(arc, 3, key, {"consistency": proof})
    assert "consistency" in problems(arc, keys)


def test_checkpoint_with_wrong_previous_size(arc: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    resign_checkpoint(arc, 3, key, {"prev_size": 1})
    assert "checkpoint-chain" in problems(arc, keys)


def test_a_segment_that_appears_while_verifying_is_a_note_not_a_deletion(arc: Path,
                                                                         keys: dict[str, VerifyKey]) -> None:
    """A running writer rotates between the directory listing and the read of the newest segment's log: the
    listing ends at a closed segment, yet nothing was deleted (the directory has the next one by then)."""
    from agent.archive.verify import _Verifier

    v = _Verifier(arc, keys)
    for table in (v.listing.logs, v.listing.events, v.listing.gz):
        table.pop(5, None)  # the listing as it was just before segment 5 was made
    report = v.run()
    assert report.ok, report.lines()
    assert "grew" in {n.code for n in report.notes}
    layout.events_path(arc, 5).unlink()
    layout.log_path(arc, 5).unlink()
    assert problems(arc, keys) == {"ends-closed"}  # gone for good: still the deletion it was


def test_a_deleted_segment_is_reported_once_not_again_as_unsealed(archive_dir: Path, key: SigningKey,
                                                                 keys: dict[str, VerifyKey]) -> None:
    """The last closed segment deleted, the open one after it still empty: its events are missing, once."""
    evs = events(key, 1, 40)
    write_archive(archive_dir, key, [evs[i:i + 10] for i in range(0, 40, 10)], segment_max_bytes=SEGMENT_BYTES,
                  compression="none", checkpoint_every=7)
    assert layout.scan(archive_dir).numbers() == [1, 2, 3, 4, 5] and not ev_lines(archive_dir, 5)
    layout.events_path(archive_dir, 4).unlink()
    layout.log_path(archive_dir, 4).unlink()
    report = verify_archive(archive_dir, keys)
    codes = [p.code for p in report.problems]
    assert "missing-segment" in codes and "unsealed" not in codes, report.lines()


# --- what the writer itself does with a tampered archive when it starts -------------------------------------

def _retention(key: SigningKey, seg: int, segments: list[int], prev: str) -> bytes:
    return encode_record({"kind": "retention", "seg": seg, "segments": segments, "size": 0, "frontier": [],
                          "chain": "", "checkpoint": "", "removed_bytes": 1, "reason": "retain_bytes",
                          "prev": prev, "time": "2026-01-01T00:00:00.000000Z"}, key)


@pytest.mark.parametrize("where", ["oldest", "newest"])
@pytest.mark.parametrize("forged", ["unsigned", "signed-unchained"])
def test_a_forged_retention_record_removes_nothing_when_the_writer_starts(
        arc: Path, key: SigningKey, keys: dict[str, VerifyKey], where: str, forged: str) -> None:
    """Recovery finishes a retention a crash interrupted; a record it cannot authenticate and chain (one line
    appended by anyone, or a validly signed one from elsewhere) must not make it delete evidence."""
    if forged == "unsigned":
        line = orjson.dumps({**orjson.loads(_retention(key, 1, [1, 4], "")), "sig": "AAAA"})
    else:  # signed by the right key, but it follows no record of this archive
        line = _retention(key, 5, [1, 4], "not-the-chain")
    n = 1 if where == "oldest" else 5
    log = layout.log_path(arc, n)
    log.write_bytes(log.read_bytes() + line + b"\n")
    write_archive(arc, key, [], compression="none")  # a start and a clean stop
    assert sorted(layout.scan(arc).numbers()) == [1, 2, 3, 4, 5]
    assert problems(arc, keys) & {"record-signature", "chain", "wrong-segment", "after-close", "bad-record"}


def test_events_added_after_a_clean_stop_are_not_sealed_by_the_next_start(
        arc: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    """A clean stop seals every event it counts. Lines appended later were not written by the writer: it
    refuses to start rather than vouch for them, and leaves everything as it found it for verify."""
    more = events(key, 46, 3)
    ev = layout.events_path(arc, 5)
    before_log = layout.log_path(arc, 5).read_bytes()
    ev.write_bytes(ev.read_bytes() + b"".join(e + b"\n" for e in more))
    with pytest.raises(SinkError, match="stopped cleanly with 45 events, and the archive now holds 48"):
        write_archive(arc, key, [], compression="none")
    assert layout.log_path(arc, 5).read_bytes() == before_log
    assert "unsealed" in problems(arc, keys)


def test_a_resume_that_does_not_start_where_the_clean_stop_ended_is_a_problem(
        arc: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    log = layout.log_path(arc, 5)
    lines = log.read_bytes().splitlines()
    stop = parse_record(lines[-1])
    assert stop["kind"] == "stop" and stop["size"] == 45
    forged = encode_record({"kind": "resume", "seg": 5, "size": 48, "clean": True, "prev": "",
                            "time": "2026-01-01T00:00:00.000000Z"}, key)
    from agent.archive.records import chain_hash

    forged = encode_record({**orjson.loads(forged), "prev": chain_hash(lines[-1])}, key)
    log.write_bytes(log.read_bytes() + forged + b"\n")
    assert "resume-size" in problems(arc, keys)


@pytest.mark.parametrize("kind", [b"[]", b"{}", b"1"])
def test_a_record_kind_that_is_not_a_string_is_a_problem_not_a_crash(
        arc: Path, key: SigningKey, keys: dict[str, VerifyKey], kind: bytes) -> None:
    log = layout.log_path(arc, 1)
    log.write_bytes(log.read_bytes().replace(b'"kind":"open"', b'"kind":' + kind, 1))
    with pytest.raises(VerifyError, match="known kind"):
        parse_record(log.read_bytes().splitlines()[0])
    assert "bad-record" in problems(arc, keys)


def test_a_newest_segment_just_begun_without_its_events_file_is_a_note(
        arc: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    """A crash just after a rotation leaves the new log's open record and no events file yet: nothing sealed
    is missing. Without the open record alone (anything sealed or stopped there), it stays a problem."""
    from agent.archive.writer import ArchiveWriter

    w = ArchiveWriter(arc, key)
    w.open()
    w.rotate()
    n = max(layout.scan(arc).numbers())
    w._release()  # killed: no checkpoint, no stop
    layout.events_path(arc, n).unlink()
    report = verify_archive(arc, keys)
    assert report.ok, report.lines()
    assert "events-not-created" in {x.code for x in report.notes}
    layout.events_path(arc, 3).unlink()  # an older segment's: a problem as before
    assert "missing-events" in problems(arc, keys)
