"""cgroup change events against the kernel: a scratch subtree of /sys/fs/cgroup/unified."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from agent.probes.cgroup import CgroupOptions, CgroupProbe
from agent.watch.cgroups import CgroupWatcher, CgroupWatchOptions, watch_cgroups
from agent.watch.cgtree import walk_dirs

from .conftest import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.root]


@asynccontextmanager
async def watching(root: Path, collector: Collector, options: CgroupWatchOptions,
                   **kw: object) -> AsyncIterator[CgroupWatcher]:
    box: list[CgroupWatcher] = []
    ready = anyio.Event()

    def on_ready(w: CgroupWatcher) -> None:
        box.append(w)
        ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: watch_cgroups(collector, str(root), options, ready=on_ready, **kw))  # type: ignore[arg-type]
        with anyio.fail_after(5):
            await ready.wait()
        yield box[0]
        tg.cancel_scope.cancel()


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])


async def test_populated_flips_when_a_process_moves_in_and_exits(cg_root: Path, collector: Collector) -> None:
    (cg_root / "a").mkdir()
    async with watching(cg_root, collector, CgroupWatchOptions()):
        proc = _sleeper()
        try:
            (cg_root / "a" / "cgroup.procs").write_text(str(proc.pid))
            r = await collector.wait_for(lambda r: r.subject == "/a" and r.output.get("cgroup_events", {}).get(
                "populated") == 1)
            assert r.output["change"] == "modified" and r.output["file"] == "cgroup.events"
            assert r.output["deltas"] == {"cgroup_events": {"populated": 1}}
            assert r.inputs == (f"{cg_root}/a/cgroup.events",) and r.probe_source == f"cgroup2:{cg_root}"
        finally:
            proc.kill()
            proc.wait(timeout=10)
        r = await collector.wait_for(lambda r: r.subject == "/a" and r.output.get("cgroup_events", {}).get(
            "populated") == 0)
        assert r.output["deltas"]["cgroup_events"]["populated"] == -1
        # the parent's cgroup.events reports the subtree too
        await collector.wait_for(lambda r: r.subject == "/" and r.output.get("cgroup_events", {}).get(
            "populated") == 0)


async def test_cgroups_created_after_start_and_removed(cg_root: Path, collector: Collector) -> None:
    async with watching(cg_root, collector, CgroupWatchOptions()) as w:
        before = w.source.stats.watches
        (cg_root / "new").mkdir()
        (cg_root / "new" / "deeper").mkdir()
        created = await collector.wait_for(lambda r: r.subject == "/new/deeper" and r.output["change"] == "created")
        assert created.output["cgroup_events"] == {"populated": 0, "frozen": 0}
        assert (cg_root / "new" / "cgroup.events").exists()
        (cg_root / "new" / "deeper" / "cgroup.freeze").write_text("1")
        await collector.wait_for(lambda r: r.subject == "/new/deeper" and r.output.get("change") == "modified")
        assert w.source.stats.watches > before
        (cg_root / "new" / "deeper").rmdir()
        (cg_root / "new").rmdir()
        gone = await collector.wait_for(lambda r: r.subject == "/new" and r.output["change"] == "removed")
        assert gone.output["inode"] > 0 and "cgroup_events" in gone.output
        removed = [r for r in collector.readings if r.output.get("change") == "removed"]
        assert [r.subject for r in removed] == ["/new/deeper", "/new"]
        assert removed[0].output["cgroup_events"]["frozen"] == 1  # the last values seen
        assert "/new" not in w.cgroups and w.source.stats.watches == before


async def test_include_selects_created_and_removed_alike(cg_root: Path, collector: Collector) -> None:
    async with watching(cg_root, collector, CgroupWatchOptions(), include=("keep*",)):
        (cg_root / "other").mkdir()
        (cg_root / "keep").mkdir()
        await collector.wait_for(lambda r: r.subject == "/keep" and r.output["change"] == "created")
        (cg_root / "other").rmdir()
        (cg_root / "keep").rmdir()
        await collector.wait_for(lambda r: r.subject == "/keep" and r.output["change"] == "removed")
        await anyio.sleep(0.2)
    assert not [r for r in collector.readings if r.subject == "/other"]


async def test_a_flapping_cgroup_yields_bounded_events_with_counts(cg_root: Path, collector: Collector) -> None:
    (cg_root / "flap").mkdir()
    coalesce = 0.2
    flapper = ("import sys, time\nend = time.monotonic() + 1.0\nn = 0\n"
               "with open(sys.argv[1], 'w') as f:\n"
               "    while time.monotonic() < end:\n"
               "        f.write('1' if n % 2 == 0 else '0'); f.flush(); n += 1\n"
               "print(n)\n")
    async with watching(cg_root, collector, CgroupWatchOptions(coalesce=coalesce)) as w:
        t0 = time.monotonic()
        done = await anyio.run_process([sys.executable, "-c", flapper, str(cg_root / "flap" / "cgroup.freeze")])
        writes = int(done.stdout)
        # until the last folded firing has come: every notification is then in exactly one event (the last
        # ones reach the loop from the waiter thread, which a loaded machine may wake late)
        with anyio.fail_after(10):
            while True:
                await anyio.sleep(coalesce * 2)
                notified = w.source.stats.notifications
                events = [r for r in collector.readings if r.subject == "/flap"]
                if sum(r.output["coalesced"] + 1 for r in events) == notified:
                    break
        elapsed = time.monotonic() - t0
    assert writes > 100  # hundreds or thousands of state changes ...
    assert 1 <= len(events) <= elapsed / coalesce + 1  # ... at most one event per window
    assert any(r.output["coalesced"] > 0 for r in events)


async def test_watch_limit_is_reported_once_per_crossing(cg_root: Path, collector: Collector) -> None:
    for i in range(6):
        (cg_root / f"c{i}").mkdir()
    async with watching(cg_root, collector, CgroupWatchOptions(max_watches=5)) as w:
        r = await collector.wait_for(lambda r: r.output.get("change") == "watch_limit")
        assert r.error and "watch limit reached" in r.error and r.output["max_watches"] == 5
        assert w.source.stats.watches == 5 and w.source.stats.refused > 0
        w.reconcile(await anyio.to_thread.run_sync(w.walk))  # refused again, not reported again
        await anyio.sleep(0.2)
        assert len([r for r in collector.readings if r.output.get("change") == "watch_limit"]) == 1

        def watched(p: str) -> bool:
            return w.cgroups[p].wd is not None or bool(w.cgroups[p].files)

        unwatched = {f"/c{i}" for i in range(6) if not watched(f"/c{i}")}  # known all the same
        assert unwatched and {f"/c{i}" for i in range(6)} <= set(w.cgroups)
        for i in range(6):  # room again: a rescan watches the cgroups refused before, without calling them new
            if f"/c{i}" not in unwatched:
                (cg_root / f"c{i}").rmdir()
        await collector.wait_for(lambda r: r.output.get("change") == "removed")
        w.reconcile(await anyio.to_thread.run_sync(w.walk))
        assert any(watched(p) for p in unwatched)
        await anyio.sleep(0.2)
    # use fell well below the limit and reached it again: reported a second time
    assert len([r for r in collector.readings if r.output.get("change") == "watch_limit"]) == 2
    assert not [r for r in collector.readings if r.output.get("change") == "created"]


async def test_cgroups_made_past_the_watch_limit_are_still_told_created_and_removed(cg_root: Path,
                                                                                     collector: Collector) -> None:
    async with watching(cg_root, collector, CgroupWatchOptions(max_watches=3)) as w:
        for i in range(5):
            (cg_root / f"late{i}").mkdir()
        for i in range(5):
            await collector.wait_for(lambda r, i=i: r.subject == f"/late{i}" and r.output.get("change") == "created")
        assert any(r.output.get("change") == "watch_limit" for r in collector.readings)
        assert w.source.stats.watches <= 3
        for i in range(5):
            (cg_root / f"late{i}").rmdir()
        for i in range(5):
            await collector.wait_for(lambda r, i=i: r.subject == f"/late{i}" and r.output.get("change") == "removed")


async def test_rescan_announces_what_notifications_missed(cg_root: Path, collector: Collector) -> None:
    async with watching(cg_root, collector, CgroupWatchOptions(), exclude=("/hidden*",)) as w:
        (cg_root / "late").mkdir()
        await collector.wait_for(lambda r: r.subject == "/late" and r.output["change"] == "created")
        # as if its creation had never been heard of: the next reconciliation brings it back, announced
        w._drop(w.cgroups.pop("/late"))
        w._known.discard("/late")
        w.reconcile(await anyio.to_thread.run_sync(w.walk))
        def created() -> int:
            return len([r for r in collector.readings if r.subject == "/late" and r.output.get("change") == "created"])

        await collector.wait_for(lambda r: created() == 2)
        assert "/late" in w.cgroups
        (cg_root / "hidden").mkdir()
        await anyio.sleep(0.2)
        assert "/hidden" not in w.cgroups


def test_walk_dirs_on_a_plain_tree(tmp_path: Path) -> None:
    for d in ("a/b/c", "x"):
        (tmp_path / d).mkdir(parents=True)
    for f in ("cgroup.events", "a/memory.events", "a/cpu.stat", "a/b/c/pids.events"):
        (tmp_path / f).write_text("k 1\n")
    dirs = walk_dirs(str(tmp_path), exclude=("/x",), max_depth=2, files=("*.events",))
    assert [(d.path, d.depth, d.files) for d in dirs] == [
        ("/", 0, ("cgroup.events",)), ("/a", 1, ("memory.events",)), ("/a/b", 2, ())]


async def test_psi_trigger_fires_under_cpu_pressure(cg_root: Path, collector: Collector) -> None:
    (cg_root / "busy").mkdir()
    trigger = "cpu some 50000 2000000"
    options = CgroupWatchOptions(psi_triggers=(trigger,), psi_paths=("/busy",))
    async with watching(cg_root, collector, options) as w:
        refused = [r for r in collector.readings if r.error and "PSI trigger" in r.error]
        if refused or not w.cgroups["/busy"].psi:
            pytest.skip(f"the kernel refused the trigger: {refused[0].error if refused else 'no fd'}")
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
        try:
            for p in procs:
                (cg_root / "busy" / "cgroup.procs").write_text(str(p.pid))
            r = await collector.wait_for(lambda r: r.output.get("change") == "pressure", timeout=15)
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=10)
    assert r.subject == "/busy"
    assert r.output["trigger"] == {"resource": "cpu", "kind": "some", "stall_us": 50000, "window_us": 2000000}
    some = r.output["psi"]["cpu"]["some"]
    assert some["total"] >= 50000 and set(some) == {"avg10", "avg60", "avg300", "total"}


async def test_probe_watch_reports_a_missing_root(collector: Collector, tmp_path: Path) -> None:
    probe = CgroupProbe(CgroupOptions(root=str(tmp_path / "absent")))
    with anyio.fail_after(5):
        await probe.watch(collector)
    assert collector.readings[0].error and "not started" in collector.readings[0].error
    assert collector.readings[0].type == "io.hoststamp.host.v1.cgroup.change"


async def test_psi_trigger_is_never_written_outside_a_cgroup2_file_system(collector: Collector,
                                                                          tmp_path: Path) -> None:
    # a root pointed at an ordinary tree (by mistake, or by whoever can write the configuration): its
    # cpu.pressure, here a link to a file elsewhere, must not receive the trigger line from the agent
    (tmp_path / "busy").mkdir()
    for d in (tmp_path, tmp_path / "busy"):
        (d / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    victim = tmp_path / "precious"
    victim.write_text("keep me\n")
    (tmp_path / "busy" / "cpu.pressure").symlink_to(victim)
    options = CgroupWatchOptions(psi_triggers=("cpu some 50000 2000000",), psi_paths=("/busy",))
    async with watching(tmp_path, collector, options) as w:
        assert not w.cgroups["/busy"].psi
    assert victim.read_text() == "keep me\n"
    refused = [r.error for r in collector.readings if r.error and "PSI trigger" in r.error]
    assert refused and "not a file of a cgroup2 file system" in refused[0]
