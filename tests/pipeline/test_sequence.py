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


def test_corrupt_state_is_survivable_and_starts_above_any_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    path.write_text("{not json")
    s = SequenceStore(path)
    # nothing is known, so new numbers start at the time in microseconds: above any earlier run's
    assert s.next("a") > 1_000_000_000_000_000 and s.unclean


def test_a_new_source_costs_no_write(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    s = SequenceStore(path)
    before = path.read_bytes()
    for i in range(500):
        assert s.next(f"guest/{i}") == 1  # a guest inventing a source per event
    assert path.read_bytes() == before
    s.close()
    assert "guest/499" in json.loads(path.read_text())["sources"]


def test_a_crash_before_a_new_source_was_written_never_repeats(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    s = SequenceStore(path, block=100)
    handed = [s.next("new") for _ in range(50)]  # below the first reservation: never written
    assert "new" not in json.loads(path.read_text())["sources"]
    # killed here; twice, to see the epoch move on
    s2 = SequenceStore(path, block=100)
    n2 = [s2.next("new") for _ in range(50)]
    s3 = SequenceStore(path, block=100)
    n3 = s3.next("new")
    assert s2.unclean and min(n2) > max(handed) and n3 > max(n2)


def test_dropped_sources_never_repeat(tmp_path: Path) -> None:
    s = SequenceStore(tmp_path / "seq.json", max_sources=4)
    seen: dict[str, list[int]] = {}
    for _round in range(5):
        for src in ("a", "b", "c", "d", "e", "f"):
            seen.setdefault(src, []).append(s.next(src))
    for src, nums in seen.items():
        assert nums == sorted(nums) and len(set(nums)) == len(nums), src


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
