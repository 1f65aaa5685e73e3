"""Mount table change events against the kernel: a tmpfs in a private mount namespace made here."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from agent.probes.mounts import MountsOptions, MountsProbe
from agent.watch.mounts import MountWatcher, MountWatchOptions, watch_mounts

from .conftest import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.root]


@pytest.fixture
def mntns() -> Iterator[int]:
    """The pid of a process alone in a private mount namespace (mounts there vanish with it)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("needs root, unshare and nsenter")
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "60"])
    try:
        for _ in range(500):  # until unshare has exec'd sleep in the new namespace: only then is it private (until
            # then, the host's mount changes propagate into it)
            with open(f"/proc/{proc.pid}/comm") as f:
                if f.read().strip() == "sleep":
                    break
            time.sleep(0.01)
        assert os.readlink(f"/proc/{proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)


def in_ns(pid: int, *args: str) -> None:
    subprocess.run(["nsenter", "-t", str(pid), "-m", *args], check=True, capture_output=True, timeout=10)


@asynccontextmanager
async def running(coro_fn: object, ready: anyio.Event) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(coro_fn)  # type: ignore[arg-type]
        with anyio.fail_after(5):
            await ready.wait()
        yield
        tg.cancel_scope.cancel()


async def test_added_remounted_readonly_and_removed(mntns: int, tmp_path: Path, collector: Collector) -> None:
    target = str(tmp_path)
    ready = anyio.Event()
    options = MountWatchOptions(mountinfo=f"/proc/{mntns}/mountinfo")

    def on_ready(w: MountWatcher) -> None:
        ready.set()

    async with running(lambda: watch_mounts(collector, options, ready=on_ready), ready):
        in_ns(mntns, "mount", "-t", "tmpfs", "-o", "size=1m", "hs-watch", target)
        added = await collector.wait_for(lambda r: r.subject == target and r.output["change"] == "added")
        assert added.output["fstype"] == "tmpfs" and added.output["source"] == "hs-watch"
        assert added.output["readonly"] is False and added.type == "io.hoststamp.host.v1.mounts.change"
        in_ns(mntns, "mount", "-o", "remount,ro", target)
        ro = await collector.wait_for(lambda r: r.subject == target and r.output["change"] == "remounted")
        assert ro.output["readonly"] is True and ro.output["was_readonly"] is False
        assert ro.output["mount_id"] == added.output["mount_id"]
        in_ns(mntns, "umount", target)
        gone = await collector.wait_for(lambda r: r.subject == target and r.output["change"] == "removed")
        assert gone.output["mount_id"] == added.output["mount_id"]
    assert not any(r.subject != target for r in collector.readings)  # the host's own mounts did not move


async def test_new_remote_mount_is_checked_at_once(mntns: int, tmp_path: Path, collector: Collector) -> None:
    target = str(tmp_path)
    # tmpfs stands in for a remote file system; the check reaches the namespace through /proc/PID/root
    probe = MountsProbe(MountsOptions(fstypes=("tmpfs",), rootfs=f"/proc/{mntns}/root", containers=False,
                                      watch=MountWatchOptions(mountinfo=f"/proc/{mntns}/mountinfo")))
    ready = anyio.Event()
    try:
        async with running(lambda: watch_mounts(collector, probe.options.watch, check=probe.check_mount,
                                                wants_check=lambda e: e.fstype == "tmpfs",
                                                ready=lambda w: ready.set()), ready):
            in_ns(mntns, "mount", "-t", "tmpfs", "-o", "size=1m", "hs-remote", target)
            checked = await collector.wait_for(lambda r: r.subject == target and r.kind == "", timeout=10)
    finally:
        await probe.aclose()
    assert checked.output["status"] == "ok" and checked.output["fstype"] == "tmpfs"
    assert checked.inputs == (f"/proc/{mntns}/mountinfo",)  # the table the mount was seen in
    assert checked.output["capacity"]["size_bytes"] == 1 << 20
    assert checked.type == "io.hoststamp.host.v1.mounts"


async def test_unreadable_table_is_one_error_reading(tmp_path: Path, collector: Collector) -> None:
    probe = MountsProbe(MountsOptions(watch=MountWatchOptions(mountinfo=str(tmp_path / "absent"))))
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.watch, collector)
        r = await collector.wait_for(lambda r: r.error is not None)
        tg.cancel_scope.cancel()
    await probe.aclose()
    assert "not started" in (r.error or "") and r.kind == "change"
