from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from agent.pipeline.sequence import SequenceStore


def killed(s: SequenceStore) -> None:
    """What a process's death does to its store: the lock goes with its descriptor; nothing more is written."""
    os.close(s._lock_fd)
    s._lock_fd = -1


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
    killed(s)  # no close(): the next run starts above anything handed out
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


def test_corrupt_state_is_survivable_and_starts_above_any_earlier_run(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "seq.json"
    path.write_text("{not json")
    s = SequenceStore(path)
    # nothing is known, so new numbers start at the time in microseconds: above any earlier run's
    assert s.next("a") > 1_000_000_000_000_000 and s.unclean
    assert f"sequence state {path} is unreadable" in caplog.text  # and the operator is told
    s.close()


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
    killed(s)
    s2 = SequenceStore(path, block=100)
    n2 = [s2.next("new") for _ in range(50)]
    killed(s2)
    s3 = SequenceStore(path, block=100)
    n3 = s3.next("new")
    assert s2.unclean and min(n2) > max(handed) and n3 > max(n2)


def test_a_source_a_crashed_run_numbered_never_repeats_after_clean_runs_of_others(tmp_path: Path) -> None:
    """The agent numbers a new source (no write yet) and is killed; `probe lve` then runs and stops cleanly;
    `probe cgroup` must not start the cgroup source at 1 again."""
    path = tmp_path / "seq.json"
    s = SequenceStore(path)
    first = s.next("cgroup")
    killed(s)
    other = SequenceStore(path)
    other.next("lve")
    other.close()
    again = SequenceStore(path)
    assert not again.unclean and again.next("cgroup") > first
    again.close()
    assert SequenceStore(path).next("brand-new") > first


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq.json", "seq.json.tmp", "sequences.lock"]
    assert SequenceStore(path).next("a") == 2


def test_a_second_process_on_held_state_neither_disturbs_nor_repeats(tmp_path: Path) -> None:
    """``hoststamp probe`` while the agent runs: the agent's numbers go on without a gap, the probe's are its
    own (from the time in microseconds), and the state file is the agent's alone."""
    path = tmp_path / "seq.json"
    agent = SequenceStore(path, block=10)
    first = [agent.next("a") for _ in range(5)]
    before = path.read_bytes()
    probe = SequenceStore(path, block=10)
    assert probe.held_by == f"pid {os.getpid()}"
    theirs = [probe.next("a") for _ in range(30)]  # past a block: a store that kept state would write now
    probe.close()
    assert path.read_bytes() == before
    assert min(theirs) > 1_000_000_000_000_000 and theirs == sorted(set(theirs))
    assert [agent.next("a") for _ in range(20)] == list(range(6, 26)) and first == [1, 2, 3, 4, 5]
    agent.close()
    again = SequenceStore(path)
    # the next holder continues above what the probe handed out: numbers rise across the processes in turn
    assert again.held_by is None and again.next("a") == max(theirs) + 1
    late = SequenceStore(path)  # borrows while `again` holds the state: above both, with room for `again`
    assert late.held_by and late.next("a") > again.next("a") + 1_000_000
    late.close()
    again.close()


def _numbers(path: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    s = SequenceStore(Path(path))
    out.put([s.next("hoststamp://h/lve") for _ in range(3)])
    s.close()


def test_processes_started_at_once_on_one_state_never_share_a_number(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_numbers, args=(str(tmp_path / "seq.json"), out)) for _ in range(8)]
    for p in procs:
        p.start()
    got = [n for _ in procs for n in out.get(timeout=30)]
    for p in procs:
        p.join(30)
    assert len(got) == 24 and len(set(got)) == 24


def test_processes_that_borrow_numbers_never_repeat_each_others(tmp_path: Path) -> None:
    """The agent holds the state; two probes run beside it, each handing out many numbers for one source:
    their numbers are blocks borrowed one above the other, never the same number twice."""
    path = tmp_path / "seq.json"
    agent = SequenceStore(path, block=100)
    a, b = SequenceStore(path, block=100), SequenceStore(path, block=100)
    assert a.held_by and b.held_by
    got_a, got_b = [], []
    for _ in range(1000):  # interleaved, across many blocks
        got_a.append(a.next("hoststamp://h/lve"))
        got_b.append(b.next("hoststamp://h/lve"))
    assert got_a == sorted(got_a) and got_b == sorted(got_b)
    assert not set(got_a) & set(got_b)
    assert [agent.next("hoststamp://h/lve") for _ in range(3)] == [1, 2, 3]
    for s in (a, b, agent):
        s.close()


def test_after_an_unreadable_state_crashed_runs_never_repeat_each_others_new_sources(tmp_path: Path) -> None:
    """The floor taken from the clock (the file was unreadable) is kept; each unclean start must still go above
    what the run before it can have handed a source it never wrote down."""
    path = tmp_path / "seq.json"
    path.write_text("{not json")
    handed: list[int] = []
    for _run in range(3):
        s = SequenceStore(path, block=100)
        nums = [s.next("x") for _ in range(5)]
        assert not handed or min(nums) > max(handed), (handed, nums)
        handed += nums
        killed(s)
    clean = SequenceStore(path, block=100)
    clean.close()
    s = SequenceStore(path, block=100)
    assert s.next("x") > max(handed)


def test_a_long_source_is_kept_as_its_digest(tmp_path: Path) -> None:
    """A guest names its sources: one of 800 kB must not be written into the state file whole."""
    path = tmp_path / "sequences.json"
    long_a, long_b = "guest://vm/" + "a" * 800_000, "guest://vm/" + "a" * 799_999 + "b"
    st = SequenceStore(path, block=2)
    assert [st.next(long_a), st.next(long_a), st.next(long_b), st.next(long_a)] == [1, 2, 1, 3]
    st.close()
    assert path.stat().st_size < 4096
    again = SequenceStore(path, block=2)
    assert again.next(long_a) == 4 and again.next(long_b) == 2
    again.close()

