"""Records that are not the archive's own: retention records from another archive, and record lines whose
bytes are not the canonical form of what they hold."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from agent.archive import layout
from agent.archive.layout import ArchiveError
from agent.archive.policy import ArchiveOptions
from agent.archive.proof import check_proof, make_proof
from agent.archive.records import parse_record
from agent.archive.verify import verify_archive
from agent.archive.writer import ArchiveWriter
from agent.signing.keys import SigningKey, VerifyKey
from tests.archive.archive_helpers import SEGMENT_BYTES, events, sealed_archive, write_archive


@pytest.fixture
def arc(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> Path:
    """Archive A (:func:`sealed_archive`)."""
    sealed_archive(archive_dir, key)
    assert verify_archive(archive_dir, keys).ok
    assert layout.scan(archive_dir).numbers() == [1, 2, 3, 4, 5]
    return archive_dir


@pytest.fixture
def other(tmp_path: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> Path:
    """Archive B, same key, another origin: retention removed its segments 1 to 8, 9 to 11 are left."""
    root = tmp_path / "other"
    evs = events(key, 1, 100)
    write_archive(root, key, [evs[i:i + 10] for i in range(0, 100, 10)], segment_max_bytes=SEGMENT_BYTES,
                  compression="none", checkpoint_every=7, retain_bytes=30_000)
    assert verify_archive(root, keys).ok
    assert layout.scan(root).numbers() == [9, 10, 11]
    return root


def retention_lines(root: Path, n: int) -> list[bytes]:
    return [ln for ln in layout.log_path(root, n).read_bytes().splitlines()
            if parse_record(ln)["kind"] == "retention"]


def copy_segments(src: Path, dst: Path) -> None:
    for n in layout.scan(src).numbers():
        for path in (layout.events_path(src, n), layout.log_path(src, n)):
            shutil.copy(path, dst / path.name)


def test_a_retention_record_copied_from_another_archive_removes_nothing(
        arc: Path, other: Path, keys: dict[str, VerifyKey]) -> None:
    """Another archive's retention record pasted into a log, its later segments copied in: the verifier
    honours neither it nor the original in the copied log (its origin is the other archive's, and the
    segments it would remove are this archive's), names both, and checks this archive's events, so an edit
    among them is found."""
    ev = layout.events_path(arc, 5)
    lines = ev.read_bytes().splitlines(keepends=True)
    doc = orjson.loads(lines[2])
    doc["data"]["output"]["n"] += 1000
    lines[2] = orjson.dumps(doc) + b"\n"
    ev.write_bytes(b"".join(lines))
    (foreign,) = retention_lines(other, 11)
    assert parse_record(foreign)["segments"] == [8, 8]
    log = layout.log_path(arc, 1)
    pasted_at = len(log.read_bytes().splitlines()) + 1
    log.write_bytes(log.read_bytes() + foreign + b"\n")
    copy_segments(other, arc)

    report = verify_archive(arc, keys)
    assert not report.ok
    foreign_where = {p.where for p in report.problems if p.code == "foreign-retention"}
    assert f"seg-00000001.log:{pasted_at}" in foreign_where
    assert {"seg-00000009.log", "seg-00000010.log", "seg-00000011.log"} <= {w.split(":")[0] for w in foreign_where}
    codes = {p.code for p in report.problems}
    assert {"event-signature", "root-mismatch", "missing-segment", "origin"} <= codes, report.lines()
    assert [p.where for p in report.problems if p.code == "event-signature"] == ["seg-00000005.ndjson:3"]
    assert not any(n.code in ("retention", "retained-present") for n in report.notes)


def test_the_writer_does_not_act_on_a_retention_record_of_another_archive(
        arc: Path, other: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    """The other archive's newest log holds its retention record in place, signed by the same key and chained:
    copied in as the newest log, it must not make the writer remove this archive's segments it names."""
    copy_segments(other, arc)
    write_archive(arc, key, [], compression="none")  # a start and a clean stop
    assert layout.scan(arc).numbers() == [1, 2, 3, 4, 5, 9, 10, 11]
    assert "foreign-retention" in {p.code for p in verify_archive(arc, keys).problems}


def test_the_archive_s_own_retention_records_and_their_leftovers_are_not_foreign(
        archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey], tmp_path: Path) -> None:
    """Segments a retention record removes are still present after a crash between the record and the
    removal: they open with the archive's own origin, so the record is honoured and they are notes."""
    evs = events(key, 1, 100)
    w = ArchiveWriter(archive_dir, key, ArchiveOptions(segment_max_bytes=SEGMENT_BYTES, compression="none",
                                                       checkpoint_every=7, retain_bytes=30_000))
    w.open()
    saved = tmp_path / "saved"
    for i in range(0, 100, 10):
        shutil.rmtree(saved, ignore_errors=True)
        shutil.copytree(archive_dir, saved)
        w.append(evs[i:i + 10])
    w.close()
    kept = layout.scan(archive_dir).numbers()
    for n in layout.scan(saved).numbers():
        if n < kept[0]:  # removed by the last retention: put back as a crash would have left them
            for path in (layout.events_path(saved, n), layout.log_path(saved, n)):
                shutil.copy(path, archive_dir / path.name)
    report = verify_archive(archive_dir, keys)
    assert report.ok, report.lines()
    assert "retained-present" in {n.code for n in report.notes}
    for trusted in (None, keys):  # prove takes the same start
        assert check_proof(make_proof(archive_dir, "ev-cgroup-99", keys=trusted), keys).ok


# --- prove follows the same rule, and names what is wrong ----------------------------------------------------

def test_prove_refuses_an_archive_with_a_retention_record_pasted_in_and_names_it(
        arc: Path, other: Path, keys: dict[str, VerifyKey]) -> None:
    (foreign,) = retention_lines(other, 11)
    log = layout.log_path(arc, 1)
    pasted_at = len(log.read_bytes().splitlines()) + 1
    log.write_bytes(log.read_bytes() + foreign + b"\n")
    for trusted in (None, keys):
        with pytest.raises(ArchiveError) as info:
            make_proof(arc, "ev-cgroup-3", keys=trusted)
        text = str(info.value)
        assert text.startswith(f"seg-00000001.log:{pasted_at}: a retention record (of segments [8, 8]) that is "
                               "not this archive's own removes nothing: it names segment 11 as its own, but is "
                               "in the log of segment 1")
        assert text.endswith("the archive was changed (run verify); no proof written")


def test_prove_refuses_an_archive_with_another_archive_s_segments_copied_in(
        arc: Path, other: Path, keys: dict[str, VerifyKey]) -> None:
    """The copied segments bring the other archive's own retention records along: not this archive's, they
    are named, not taken for the start of the tree."""
    copy_segments(other, arc)
    with pytest.raises(ArchiveError, match=r"^seg-00000009\.log:2: a retention record \(of segments \[6, 6\]\) "
                                           r"that is not this archive's own removes nothing: its archive's origin "
                                           r"is '[^']+', but segment 1, which it would remove, belongs to '[^']+' "
                                           r"\(and 2 more such records\); the archive was changed"):
        make_proof(arc, "ev-cgroup-3")


def test_prove_refuses_a_segment_of_another_origin_copied_in_and_names_it(
        arc: Path, tmp_path: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    """A segment of another archive (same key, no retention record) put in as the next segment."""
    third = tmp_path / "third"
    write_archive(third, key, [events(key, 46, 5)], compression="none")
    for src, dst in ((layout.log_path(third, 1), layout.log_path(arc, 6)),
                     (layout.events_path(third, 1), layout.events_path(arc, 6))):
        shutil.copy(src, dst)
    assert "origin" in {p.code for p in verify_archive(arc, keys).problems}
    with pytest.raises(ArchiveError, match=r"^segment seg-00000006 belongs to another archive \(its origin is "
                                           r"'[^']+', this archive's is '[^']+'; copied in\?\); the archive was "
                                           r"changed \(run verify\); no proof written$"):
        make_proof(arc, "ev-cgroup-3")


def test_prove_with_trusted_keys_takes_no_retention_record_another_key_signed(
        archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    evs = events(key, 1, 100)
    write_archive(archive_dir, key, [evs[i:i + 10] for i in range(0, 100, 10)], segment_max_bytes=SEGMENT_BYTES,
                  compression="none", checkpoint_every=7, retain_bytes=30_000)
    assert check_proof(make_proof(archive_dir, "ev-cgroup-99", keys=keys), keys).ok
    stranger = SigningKey.generate().verify_key()
    with pytest.raises(ArchiveError, match="not signed by a trusted key"):
        make_proof(archive_dir, "ev-cgroup-99", keys={stranger.keyid: stranger})


# --- the last record of a log is checked for its exact form ---------------------------------------------------

NONCANONICAL = {
    "duplicate member": lambda ln: ln.replace(b'"size":45', b'"size":99,"size":45'),
    "added space": lambda ln: ln.replace(b'"size":45', b'"size": 45'),
    "escaped letter": lambda ln: ln.replace(b'"size"', b'"\\u0073ize"'),
    "integral float": lambda ln: ln.replace(b'"size":45', b'"size":45.0'),
    "carriage return": lambda ln: ln + b"\r",
}


@pytest.mark.parametrize("change", list(NONCANONICAL.values()), ids=list(NONCANONICAL))
def test_a_last_record_line_not_in_canonical_form_is_a_problem(arc: Path, keys: dict[str, VerifyKey],
                                                                change: object) -> None:
    log = layout.log_path(arc, 5)
    lines = log.read_bytes().splitlines()
    assert parse_record(lines[-1])["kind"] == "stop" and b'"size":45' in lines[-1]
    lines[-1] = change(lines[-1])  # type: ignore[operator]
    log.write_bytes(b"\n".join(lines) + b"\n")
    report = verify_archive(arc, keys)
    assert [(p.code, p.where) for p in report.problems] == [("non-canonical-record",
                                                            f"seg-00000005.log:{len(lines)}")], report.lines()
