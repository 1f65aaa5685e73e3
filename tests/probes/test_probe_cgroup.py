"""The ``cgroup`` probe: fixture trees of real files, and the real cgroup2 mount of this host."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agent import schema
from agent.errors import ConfigError
from agent.model import Reading
from agent.probes import registry
from agent.probes.cgroup import CgroupOptions, CgroupProbe, resolve_root

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"
UNIFIED = HOSTS / "hybrid-systemd" / "sys" / "fs" / "cgroup" / "unified"
REAL = Path("/sys/fs/cgroup/unified")


def collect(probe: CgroupProbe) -> dict[str, Reading]:
    readings: Sequence[Reading] = asyncio.run(probe.collect())
    return {r.subject: r for r in readings}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "unified"
    shutil.copytree(UNIFIED, root)
    return root


def test_registered_under_its_name() -> None:
    assert registry.get("cgroup") is CgroupProbe
    assert CgroupProbe.Options is CgroupOptions


def test_fixture_readings(tree: Path) -> None:
    got = collect(CgroupProbe(CgroupOptions(root=str(tree))))
    assert len(got) == 8
    nginx = got["/system.slice/nginx.service"]
    assert nginx.probe == "cgroup" and nginx.error is None
    assert nginx.output["memory_events"]["oom_kill"] == 2 and nginx.output["memory_max"] == 536870912
    assert nginx.output["memory_current"] == 401604608 and nginx.output["deltas"] is None
    assert nginx.probe_source == f"cgroup2:{tree}"
    assert str(tree / "system.slice/nginx.service/memory.events") in nginx.inputs
    data = nginx.data()
    assert data["output"]["psi"]["io"]["full"]["total"] == 43008
    broken = got["/system.slice/broken.service"]
    assert broken.error is not None and "non-numeric" in broken.error and broken.output == {}
    # an error reading still names what it read: the files of the leaf, the one that did not parse among them
    assert broken.inputs and all(i.startswith(f"{tree}/system.slice/broken.service/") for i in broken.inputs)
    assert any(broken.error.startswith(i) or i.rsplit("/", 1)[1] in broken.error for i in broken.inputs)
    assert sum(1 for r in got.values() if r.error) == 1


def test_a_link_in_the_tree_is_not_followed_nor_its_target_quoted(tree: Path, tmp_path: Path) -> None:
    """cgroupfs holds no symbolic links: one in a tree leads out of it. Its target is neither read nor quoted
    into a signed event; the other leaves go on."""
    secret = tmp_path / "secret"
    secret.write_text("root:hunter2:20228:0:99999:7:::\n")
    events = tree / "system.slice/nginx.service/memory.events"
    events.unlink()
    events.symlink_to(secret)
    got = collect(CgroupProbe(CgroupOptions(root=str(tree))))
    nginx = got["/system.slice/nginx.service"]
    assert nginx.error == f"{events}: a symbolic link, not followed" and nginx.output == {}
    assert all("hunter2" not in str(r.data()) for r in got.values())
    assert sum(1 for r in got.values() if r.error) == 2  # with the fixture's broken.service


def test_a_link_where_a_child_cgroup_would_be_is_an_error_reading_naming_it(tree: Path, tmp_path: Path) -> None:
    """A link to a directory of cgroup files, in the tree or below a leaf, is named by an error reading of its
    own and never followed (its target is not even looked at); the leaf above it is read as before."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cpu.stat").write_text("usage_usec 777\n")
    (tree / "linked.slice").symlink_to(elsewhere)
    (tree / "system.slice/nginx.service/only").symlink_to(elsewhere)
    got = collect(CgroupProbe(CgroupOptions(root=str(tree))))
    for rel in ("/linked.slice", "/system.slice/nginx.service/only"):
        assert got[rel].error == f"{tree}{rel}: a symbolic link, not followed" and got[rel].output == {}
    assert got["/system.slice/nginx.service"].error is None  # still the leaf it was
    assert all("777" not in str(r.data()) for r in got.values())


def test_deltas_show_an_oom_kill_in_the_last_interval(tree: Path) -> None:
    probe = CgroupProbe(CgroupOptions(root=str(tree), include=("/system.slice/*",)))
    collect(probe)
    events = tree / "system.slice/nginx.service/memory.events"
    events.write_text(events.read_text().replace("oom_kill 2", "oom_kill 3").replace("oom 2", "oom 3"))
    cpu = tree / "system.slice/sshd.service/cpu.stat"
    cpu.write_text(cpu.read_text().replace("usage_usec 2811003", "usage_usec 2911003"))
    got = collect(probe)
    d = got["/system.slice/nginx.service"].output["deltas"]
    assert d["memory_events"] == {"low": 0, "high": 0, "max": 0, "oom": 1, "oom_kill": 1, "oom_group_kill": 0}
    assert d["interval_s"] >= 0 and d["psi"]["cpu"]["some"] == {"total": 0}
    assert got["/system.slice/sshd.service"].output["deltas"]["cpu_stat"]["usage_usec"] == 100000
    # the broken leaf stays an error, and has no deltas state
    assert got["/system.slice/broken.service"].error is not None


def test_recreated_cgroup_starts_afresh_and_vanished_one_is_dropped(tree: Path) -> None:
    probe = CgroupProbe(CgroupOptions(root=str(tree)))
    collect(probe)
    # same name, new directory (new inode): no delta against the old one
    sshd = tree / "system.slice/sshd.service"
    shutil.copytree(sshd, tree / "system.slice/sshd.new")
    shutil.rmtree(sshd)
    (tree / "system.slice/sshd.new").rename(sshd)
    shutil.rmtree(tree / "init.scope")
    got = collect(probe)
    assert got["/system.slice/sshd.service"].output["deltas"] is None
    assert got["/system.slice/nginx.service"].output["deltas"] is not None
    assert "/init.scope" not in got


def test_max_leaves_bounds_a_scan(tree: Path) -> None:
    got = asyncio.run(CgroupProbe(CgroupOptions(root=str(tree), max_leaves=3)).collect())
    assert [r.subject for r in got[:3]] == ["/init.scope", "/system.slice/broken.service",
                                           "/system.slice/cron.service"]
    assert len(got) == 4 and got[-1].subject == "/"
    assert got[-1].error is not None and "max_leaves=3" in got[-1].error


def test_max_depth_and_exclude(tree: Path) -> None:
    got = collect(CgroupProbe(CgroupOptions(root=str(tree), max_depth=1, exclude=("/user.slice",))))
    assert sorted(got) == ["/init.scope", "/system.slice"]
    assert got["/system.slice"].output["cpu_stat"]["usage_usec"] == 88123456789


@pytest.mark.parametrize(("include", "exclude"), [
    (("/system.slice/*",), ("/system.slice/broken.service",)),
    (("system.slice/*",), ("system.slice/broken.service",)),  # as deploy/hoststamp.toml writes them
    (("system.slice/*", "machine.slice/*"), ("*broken*",)),
])
def test_globs_match_relative_paths_with_or_without_the_leading_slash(
        tree: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    got = collect(CgroupProbe(CgroupOptions(root=str(tree), include=include, exclude=exclude)))
    assert got and all(s.startswith("/system.slice/") for s in got)
    assert "/system.slice/nginx.service" in got and "/system.slice/broken.service" not in got


def test_globs_that_match_the_leading_slash_still_do() -> None:
    from agent.hostfs.cgroupfs import path_matches

    assert path_matches("/init.scope", ["*/init.scope"]) and path_matches("/user.slice", ["*/user.slice"])
    assert path_matches("/docker-abc.scope", ["*/docker-*.scope"]) and path_matches("/a/b", ["a/*"])
    assert path_matches("/a/b", ["/a/*"]) and not path_matches("/a/b", ["/b"]) and not path_matches("/ab", ["a"])


def test_an_exclude_without_the_leading_slash_prunes_the_subtree(tree: Path) -> None:
    every = collect(CgroupProbe(CgroupOptions(root=str(tree))))
    got = collect(CgroupProbe(CgroupOptions(root=str(tree), exclude=("system.slice",))))
    assert any(s.startswith("/system.slice/") for s in every)
    assert not any(s.startswith("/system.slice") for s in got) and got


def test_options_from_toml_table() -> None:
    o = schema.build(CgroupOptions, {"root": "/x", "include": ["/a/*"], "max_depth": 2}, prefix="probes.cgroup",
                     file="t.toml")
    assert o == CgroupOptions(root="/x", include=("/a/*",), max_depth=2)
    with pytest.raises(ConfigError, match=r"probes\.cgroup\.depth"):
        schema.build(CgroupOptions, {"depth": 2}, prefix="probes.cgroup", file="t.toml")
    with pytest.raises(ConfigError, match="max_depth"):
        schema.build(CgroupOptions, {"max_depth": -1}, prefix="probes.cgroup", file="t.toml")


def test_unavailable(tmp_path: Path) -> None:
    v1_only = str(HOSTS / "no-cgroup2" / "proc" / "self" / "mountinfo")
    assert "no cgroup2 mount" in (CgroupProbe.unavailable(CgroupOptions(mountinfo=v1_only)) or "")
    assert "not a cgroup v2" in (CgroupProbe.unavailable(CgroupOptions(root=str(tmp_path))) or "")
    assert resolve_root(CgroupOptions(mountinfo=str(HOSTS / "unified-v2/proc/self/mountinfo"))) == "/sys/fs/cgroup"


def test_missing_root_fails_the_collection(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cgroup root"):
        asyncio.run(CgroupProbe(CgroupOptions(root=str(tmp_path / "gone"))).collect())


def _v1_hierarchy() -> Path | None:
    """A cgroup v1 controller's hierarchy mounted on this host (hybrid mode), if there is one."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup":
            return Path(fields[1])
    return None


def test_a_cgroup_v1_hierarchy_as_root_is_refused_not_read_as_v2() -> None:
    """Its files have other names and other units (``throttled_time`` in ns): each round is one error reading
    that says so, never v1 values under the v2 names."""
    v1 = _v1_hierarchy()
    if v1 is None:
        pytest.skip("no cgroup v1 hierarchy mounted here")
    with pytest.raises(Exception, match=f"{v1} is a cgroup v1 hierarchy; the cgroup probe reads cgroup v2"):
        asyncio.run(CgroupProbe(CgroupOptions(root=str(v1))).collect())


# --- the real cgroup2 mount -------------------------------------------------------------------------------

@pytest.fixture
def real_group() -> Iterator[Path]:
    if not (REAL / "cgroup.procs").exists():
        pytest.skip("no cgroup2 mount at /sys/fs/cgroup/unified")
    base = REAL / f"hoststamp-probe-{os.getpid()}"
    (base / "work").mkdir(parents=True)
    (base / "idle").mkdir()
    try:
        yield base
    finally:
        for d in (base / "work", base / "idle", base):
            if d.exists():
                d.rmdir()


@pytest.mark.root
def test_real_host_discovers_the_unified_mount() -> None:
    if not (REAL / "cgroup.procs").exists():
        pytest.skip("no cgroup2 mount at /sys/fs/cgroup/unified")
    probe = CgroupProbe(CgroupOptions())
    assert CgroupProbe.unavailable(probe.options) is None
    assert probe.root == str(REAL)


@pytest.mark.root
def test_real_host_cpu_usage_moves_in_deltas(real_group: Path) -> None:
    probe = CgroupProbe(CgroupOptions(include=(f"/{real_group.name}/*",)))
    worker = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); sum(range(3_000_000))"],
                              stdin=subprocess.PIPE)
    try:
        (real_group / "work" / "cgroup.procs").write_text(str(worker.pid))
        first = collect(probe)
        assert sorted(first) == [f"/{real_group.name}/idle", f"/{real_group.name}/work"]
        assert first[f"/{real_group.name}/work"].output["deltas"] is None
        worker.communicate(b"go", timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    second = collect(probe)
    work = second[f"/{real_group.name}/work"].output
    assert work["deltas"]["cpu_stat"]["usage_usec"] > 0
    assert work["cpu_stat"]["usage_usec"] >= work["deltas"]["cpu_stat"]["usage_usec"]
    assert second[f"/{real_group.name}/idle"].output["deltas"]["cpu_stat"]["usage_usec"] == 0
    assert set(work["psi"]) >= {"cpu", "io", "memory"}


def test_scan_leaves_the_event_loop_free(tree: Path) -> None:
    """Other tasks run while a scan is under way (it happens in a worker thread)."""
    probe = CgroupProbe(CgroupOptions(root=str(tree)))

    async def main() -> tuple[int, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        readings = await probe.collect()
        during = ticks - before
        stop.set()
        await task
        assert len(readings) == 8
        return before, during

    before, during = asyncio.run(main())
    assert before == 1 and during >= 1


def test_change_events_that_cannot_start_say_where_the_root_was_looked_for(tmp_path: Path) -> None:
    mountinfo = str(tmp_path / "gone" / "mountinfo")
    probe = CgroupProbe(CgroupOptions(mountinfo=mountinfo))
    got: list[Reading] = []

    async def emit(r: Reading) -> None:
        got.append(r)

    asyncio.run(probe.watch(emit))
    (r,) = got
    assert r.kind == "change" and r.error and "not started" in r.error
    assert r.inputs == (mountinfo,) and r.probe_source == f"procfs:{mountinfo}"
