"""Walking and scanning cgroup v2 trees: fixture files, a generated tree, and the real mount."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import ParseError, ProbeError
from agent.hostfs import DeltaTracker, nested_deltas, parse_cgroup_file, read_leaf, scan_cgroups, walk_cgroups
from agent.hostfs.synth import write_cgroup_tree, write_leaf

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"
UNIFIED = str(HOSTS / "hybrid-systemd" / "sys" / "fs" / "cgroup" / "unified")
REAL = "/sys/fs/cgroup/unified"

LEAVES = [
    "/init.scope",
    "/system.slice/broken.service",
    "/system.slice/cron.service",
    "/system.slice/nginx.service",
    "/system.slice/postgresql.service",
    "/system.slice/sshd.service",
    "/user.slice/user-1000.slice/session-3.scope",
    "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
]


def paths(root: str, **kw: object) -> list[str]:
    leaves, vanished = walk_cgroups(root, **kw)  # type: ignore[arg-type]
    assert vanished == []
    return sorted(c.path for c in leaves)


def test_walk_finds_leaves_only() -> None:
    assert paths(UNIFIED) == LEAVES


def test_walk_depth_limit_turns_interior_cgroups_into_leaves() -> None:
    assert paths(UNIFIED, max_depth=1) == ["/init.scope", "/system.slice", "/user.slice"]
    assert paths(UNIFIED, max_depth=0) == ["/"]
    assert "/user.slice/user-1000.slice/user@1000.service" in paths(UNIFIED, max_depth=3)


def test_walk_include_and_exclude_globs() -> None:
    assert paths(UNIFIED, include=("/system.slice/*.service",)) == [p for p in LEAVES if p.startswith("/system")]
    # an excluded directory takes its whole subtree with it
    assert paths(UNIFIED, exclude=("/user.slice",)) == [p for p in LEAVES if not p.startswith("/user")]
    assert paths(UNIFIED, include=("*.service",), exclude=("*/broken.service", "*/cron*")) == [
        "/system.slice/nginx.service", "/system.slice/postgresql.service", "/system.slice/sshd.service",
        "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service"]


def test_walk_limit_and_missing_root(tmp_path: Path) -> None:
    assert len(walk_cgroups(UNIFIED, limit=3)[0]) == 3
    with pytest.raises(ProbeError, match="cgroup root"):
        walk_cgroups(str(tmp_path / "nope"))


def test_scan_fixture_output_and_per_leaf_error() -> None:
    scans = {s.path: s for s in scan_cgroups(UNIFIED)}
    assert sorted(scans) == LEAVES
    nginx = scans["/system.slice/nginx.service"]
    assert nginx.error is None and nginx.output is not None
    assert nginx.output["memory_events"]["oom_kill"] == 2
    assert nginx.output["memory_max"] == 536870912
    assert nginx.output["pids_events"] == {"max": 0}
    assert set(nginx.output["psi"]) == {"cpu", "memory", "io"}
    assert nginx.inputs[0].endswith("nginx.service/memory.events") and len(nginx.inputs) == 8
    assert scans["/system.slice/sshd.service"].output["memory_max"] is None  # type: ignore[index]
    # controllers not enabled: only what exists
    cron = scans["/system.slice/cron.service"].output
    assert cron is not None and set(cron) == {"cpu_stat", "psi"} and set(cron["psi"]) == {"cpu"}
    broken = scans["/system.slice/broken.service"]
    assert broken.output is None and broken.error is not None and "oom_kill" in broken.error
    assert all(s.error is None for p, s in scans.items() if p != "/system.slice/broken.service")


def test_leaf_vanishing_between_walk_and_read(tmp_path: Path) -> None:
    write_leaf(tmp_path / "a", seed=1)
    write_leaf(tmp_path / "b", seed=2)
    leaves, _ = walk_cgroups(str(tmp_path))
    shutil.rmtree(tmp_path / "a")
    gone = next(c for c in leaves if c.path == "/a")
    with pytest.raises(ProbeError, match="vanished"):
        read_leaf(gone)
    assert set(read_leaf(next(c for c in leaves if c.path == "/b"))) >= {"cpu.stat", "memory.events"}


def test_parse_cgroup_file_dispatch() -> None:
    assert parse_cgroup_file("cgroup.events", "populated 1\nfrozen 0\n") == (
        ("cgroup_events",), {"populated": 1, "frozen": 0})
    assert parse_cgroup_file("memory.max", "max\n") == (("memory_max",), None)
    keys, value = parse_cgroup_file("io.pressure", "some avg10=1.00 avg60=0 avg300=0 total=3\n")
    assert keys == ("psi", "io") and value["some"]["total"] == 3
    with pytest.raises(ParseError, match="no parser"):
        parse_cgroup_file("cgroup.procs", "1\n2\n")


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one (8,000 small files are slow to create on a VM's disk)."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="hoststamp-test-") as d:
        yield Path(d)


def test_generated_tree_of_1000_leaves(memory_dir: Path) -> None:
    rels = write_cgroup_tree(memory_dir, leaves=1000)
    scans = scan_cgroups(str(memory_dir))
    assert [s.path for s in scans] == rels
    assert all(s.error is None for s in scans)
    assert sum(s.output["memory_events"]["oom_kill"] for s in scans if s.output) == 20


def test_nested_deltas_and_tracker() -> None:
    prev = {"cpu_stat": {"usage_usec": 100, "nr_periods": 5}, "psi": {"io": {"some": {"avg10": 1.5, "total": 10}}}}
    cur = {"cpu_stat": {"usage_usec": 160, "nr_periods": 2, "new": 1}, "psi": {"io": {"some": {"avg10": 0.1,
                                                                                             "total": 25}}}}
    assert nested_deltas(prev, cur) == {"cpu_stat": {"usage_usec": 60, "nr_periods": 2},
                                        "psi": {"io": {"some": {"total": 15}}}}
    t = DeltaTracker()
    assert t.update("/a", prev, 1.0, identity=7) is None
    assert t.update("/a", cur, 11.0, identity=7) == {"interval_s": 10.0, **nested_deltas(prev, cur)}
    assert t.update("/a", cur, 12.0, identity=8) is None  # re-created: new inode
    t.retain(["/b"])
    assert len(t) == 0


@pytest.mark.skipif(not os.path.isdir(REAL), reason="no cgroup2 mount at /sys/fs/cgroup/unified")
def test_real_mount_child_cgroups(tmp_path: Path) -> None:
    base = Path(REAL) / f"hoststamp-test-{os.getpid()}"
    try:
        (base / "a").mkdir(parents=True)
        (base / "b" / "c").mkdir(parents=True)
        scans = {s.path: s for s in scan_cgroups(str(base))}
        assert sorted(scans) == ["/a", "/b/c"]
        for s in scans.values():
            assert s.error is None and s.output is not None
            assert s.output["cpu_stat"]["usage_usec"] == 0
            assert "some" in s.output["psi"]["cpu"]
        # the real kernel refuses to read a removed cgroup: an error for that leaf only
        leaves, _ = walk_cgroups(str(base))
        (base / "a").rmdir()
        with pytest.raises(ProbeError, match="vanished"):
            read_leaf(next(c for c in leaves if c.path == "/a"))
    finally:
        for d in (base / "b" / "c", base / "b", base / "a", base):
            if d.exists():
                d.rmdir()
