"""Inclusion proof bundles: made from an archive, checked offline, refused when altered."""

from __future__ import annotations

import base64
import copy
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.archive import layout
from agent.archive.layout import ArchiveError
from agent.archive.proof import FORMAT, check_proof, dump_proof, load_proof, make_proof
from agent.archive.verify import verify_archive
from agent.signing.keys import SigningKey, VerifyKey
from tests.archive.archive_helpers import SEGMENT_BYTES, events, make_event, write_archive


@pytest.fixture
def bundle(archive_dir: Path, key: SigningKey) -> dict[str, Any]:
    evs = events(key, 1, 37)
    write_archive(archive_dir, key, [evs[i:i + 6] for i in range(0, 37, 6)], segment_max_bytes=6000)
    return make_proof(archive_dir, "ev-cgroup-17")


def test_proof_round_trip(bundle: dict[str, Any], keys: dict[str, VerifyKey], tmp_path: Path) -> None:
    assert bundle["format"] == FORMAT and bundle["index"] == 16 and bundle["size"] == 37
    path = tmp_path / "p.json"
    path.write_bytes(dump_proof(bundle))
    result = check_proof(load_proof(path), keys)
    assert result.ok, result.problems
    assert result.lines()[-1].startswith("OK: event ev-cgroup-17 is leaf 16 of the 37-event tree")
    assert result.as_dict()["ok"] is True


def flip_b64(s: str) -> str:
    raw = bytearray(base64.b64decode(s))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def alter_event(b: dict[str, Any]) -> None:
    doc = orjson.loads(b["event"])
    doc["data"]["output"]["n"] = 0
    b["event"] = orjson.dumps(doc).decode()


def swap_event(b: dict[str, Any], key: SigningKey) -> None:
    b["event"] = make_event(key, 99).decode()


@pytest.mark.parametrize("alter, expect", [
    (lambda b, k: alter_event(b), "event:"),
    (lambda b, k: swap_event(b, k), "audit path"),
    (lambda b, k: b.update(index=b["index"] + 1), "audit path"),
    (lambda b, k: b.update(size=b["size"] - 1), "tree of"),
    (lambda b, k: b["proof"].__setitem__(0, flip_b64(b["proof"][0])), "audit path"),
    (lambda b, k: b["proof"].pop(), "audit path"),
    (lambda b, k: b.update(checkpoint=b["checkpoint"].replace("\n37\n", "\n38\n")), "checkpoint:"),
    (lambda b, k: b.update(format="other"), "not a"),
    (lambda b, k: b.pop("index"), "lacks"),
])
def test_altered_bundles_fail(bundle: dict[str, Any], keys: dict[str, VerifyKey], key: SigningKey,
                              alter: Any, expect: str) -> None:
    b = copy.deepcopy(bundle)
    alter(b, key)
    result = check_proof(b, keys)
    assert not result.ok and any(expect in p for p in result.problems), result.problems
    assert result.lines()[-1].startswith("FAILED")


def test_untrusted_key_fails(bundle: dict[str, Any]) -> None:
    other = SigningKey.generate().verify_key()
    result = check_proof(bundle, {other.keyid: other})
    assert {p.split(":")[0] for p in result.problems} == {"event", "checkpoint"}


def test_unknown_unsealed_and_ambiguous_ids(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    a = "hoststamp://h/probe/a"
    b = "hoststamp://h/probe/b"
    write_archive(archive_dir, key, [[make_event(key, 1, source=a), make_event(key, 1, source=b)]])
    with pytest.raises(ArchiveError, match="no sealed event"):
        make_proof(archive_dir, "nope")
    # both sources make the id "ev-<last path part>-1"; with distinct parts they differ
    assert check_proof(make_proof(archive_dir, "ev-a-1"), keys).ok
    write_archive(archive_dir, key, [[make_event(key, 1, source="hoststamp://other/probe/a")]])
    with pytest.raises(ArchiveError, match="2 events have id"):
        make_proof(archive_dir, "ev-a-1")
    assert check_proof(make_proof(archive_dir, "ev-a-1", source=a), keys).ok


def test_an_event_archived_twice_proves_its_first_copy_or_the_one_named(archive_dir: Path, key: SigningKey,
                                                                       keys: dict[str, VerifyKey]) -> None:
    """At-least-once delivery archives a copy sent again: same id and source, stamped again (another body)."""
    first, again = make_event(key, 5), make_event(key, 5, pad=3)
    write_archive(archive_dir, key, [[make_event(key, 1), first, make_event(key, 2)], [again, make_event(key, 3)]])
    copies: list[int] = []
    bundle = make_proof(archive_dir, "ev-cgroup-5", copies=copies)
    assert copies == [1, 3] and bundle["index"] == 1 and bundle["event"] == first.decode()
    assert check_proof(bundle, keys).ok
    second = make_proof(archive_dir, "ev-cgroup-5", at=3)
    assert second["index"] == 3 and second["event"] == again.decode() and check_proof(second, keys).ok
    with pytest.raises(ArchiveError, match=r"leaf 2 is not event 'ev-cgroup-5' \(its copies are leaves 1, 3\)"):
        make_proof(archive_dir, "ev-cgroup-5", at=2)


def test_a_leaf_index_picks_one_of_two_sources_sharing_an_id(archive_dir: Path, key: SigningKey,
                                                              keys: dict[str, VerifyKey]) -> None:
    a, b = "hoststamp://h/probe/a", "hoststamp://other/probe/a"  # both make the id "ev-a-1"
    write_archive(archive_dir, key, [[make_event(key, 1, source=a), make_event(key, 1, source=b)]])
    with pytest.raises(ArchiveError, match="name the source"):
        make_proof(archive_dir, "ev-a-1")
    bundle = make_proof(archive_dir, "ev-a-1", at=1)
    assert bundle["index"] == 1 and orjson.loads(bundle["event"])["source"] == b and check_proof(bundle, keys).ok


def test_proof_after_retention(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    evs = events(key, 1, 60)
    write_archive(archive_dir, key, [evs[i:i + 5] for i in range(0, 60, 5)], segment_max_bytes=3000,
                  compression="none", retain_bytes=12_000)
    bundle = make_proof(archive_dir, "ev-cgroup-58")
    assert check_proof(bundle, keys).ok
    with pytest.raises(ArchiveError, match="no sealed event"):
        make_proof(archive_dir, "ev-cgroup-2")


# --- prove relies only on segments whose records name their own file ------------------------------------------

@pytest.fixture
def ten(archive_dir: Path, key: SigningKey, keys: dict[str, VerifyKey]) -> Path:
    """An archive without retention records: 9 closed, compressed segments of 10 events and an open tenth."""
    evs = events(key, 1, 95)
    write_archive(archive_dir, key, [evs[i:i + 10] for i in range(0, 95, 10)], segment_max_bytes=SEGMENT_BYTES,
                  checkpoint_every=7)
    listing = layout.scan(archive_dir)
    assert listing.numbers() == list(range(1, 11)) and sorted(listing.gz) == list(range(1, 10))
    assert verify_archive(archive_dir, keys).ok
    for event_id in ("ev-cgroup-3", "ev-cgroup-95"):  # the archive as written proves
        assert check_proof(make_proof(archive_dir, event_id), keys).ok
    return archive_dir


def put(root: Path, src: int, dst: int) -> None:
    """Segment ``src``'s files copied in as segment ``dst``'s (replacing them)."""
    for path in (layout.log_path(root, dst), layout.events_path(root, dst), layout.gz_path(root, dst)):
        path.unlink(missing_ok=True)
    for make in (layout.log_path, layout.events_path, layout.gz_path):
        if make(root, src).exists():
            shutil.copy(make(root, src), make(root, dst))


@pytest.mark.parametrize("src, dst", [(3, 11), (10, 11), (9, 10)],
                         ids=["an old segment as the newest", "the open segment as the next", "the newest replaced "
                                                                                               "by the one before"])
def test_prove_refuses_a_segment_copied_in_under_another_number_and_names_it(
        ten: Path, keys: dict[str, VerifyKey], src: int, dst: int) -> None:
    put(ten, src, dst)
    report = verify_archive(ten, keys)
    assert ("wrong-segment", f"seg-{dst:08d}.log:1") in {(p.code, p.where) for p in report.problems}
    for event_id in ("ev-cgroup-3", "ev-cgroup-85", "ev-cgroup-95"):
        with pytest.raises(ArchiveError) as info:
            make_proof(ten, event_id)
        text = str(info.value)
        assert text.startswith(f"seg-{dst:08d}.log:1: wrong-segment: record of segment {src} found in segment "
                               f"{dst} (files renamed?) (and "), text
        assert text.endswith("; the archive was changed (run verify); no proof written"), text
