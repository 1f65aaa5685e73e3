from __future__ import annotations

import json
from pathlib import Path

from agent.pipeline.sequence import SequenceStore


def test_counts_per_source(tmp_path: Path) -> None:
    s = SequenceStore(tmp_path / "seq.json")
    assert [s.next("a"), s.next("a"), s.next("b"), s.next("a")] == [1, 2, 1, 3]


def test_clean_restart_continues_without_gap(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    s = SequenceStore(path)
    for _ in range(10):
        s.next("a")
    s.close()
    s2 = SequenceStore(path)
    assert s2.next("a") == 11 and not s2.unclean


def test_crash_skips_ahead_never_repeats(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    s = SequenceStore(path, block=100)
    seen = [s.next("a") for _ in range(150)]
    # no close(): as if killed. The next run starts above anything handed out.
    s2 = SequenceStore(path, block=100)
    n = s2.next("a")
    assert n > max(seen) and s2.unclean


def test_reservation_written_before_numbers_are_used(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    s = SequenceStore(path, block=10)
    for _ in range(25):
        s.next("a")
    doc = json.loads(path.read_text())
    assert doc["clean"] is False and doc["sources"]["a"]["reserved"] >= 25


def test_corrupt_state_is_survivable(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    path.write_text("{not json")
    s = SequenceStore(path)
    assert s.next("a") == 1 and s.unclean


def test_memory_only() -> None:
    s = SequenceStore(None)
    assert s.next("x") == 1
    s.close()


def test_another_writers_temp_file_is_left_alone(tmp_path: Path) -> None:
    # two agents started at once on one state_dir: each renames only its own temp file into place
    path = tmp_path / "seq.json"
    theirs = tmp_path / "seq.json.tmp"
    theirs.write_text("another writer's half-written state")
    s = SequenceStore(path)
    assert s.next("a") == 1
    s.close()
    assert theirs.read_text() == "another writer's half-written state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq.json", "seq.json.tmp"]
    assert SequenceStore(path).next("a") == 2
