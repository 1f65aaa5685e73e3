"""The ``mounts`` probe against real FUSE mounts and a real container-like mount namespace.

A FUSE file system whose ``getattr`` blocks (``tests/fixtures/hosts/mounts-fuse/blockfs.py``,
``subtype=sshfs``) stands for a hard NFS mount whose server is gone. The hung mount lives in
a private mount namespace of the FUSE daemon (``unshare -m``), so nothing on the host, this
test process included, can trip over it; the probe reaches it through ``/proc/PID/root`` and
reads ``/proc/PID/mounts``. This process never stats it. Every mount is released in a
``finally``: the daemon is killed (which aborts the FUSE connection and frees every waiter),
then the mount point is lazily unmounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

from agent.config import ProbeConfig
from agent.model import Reading
from agent.pipeline.runner import ProbeRunner
from agent.pipeline.stats import ProbeStats
from agent.probes.base import Probe
from agent.probes.mounts import MountsOptions, MountsProbe

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"
BLOCKFS = HOSTS / "mounts-fuse" / "blockfs.py"
T = TypeVar("T")

pytestmark = [
    pytest.mark.root,
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse"),
    pytest.mark.skipif(shutil.which("fusermount") is None, reason="fuse (fusermount) not installed"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) not installed"),
]

try:
    import fuse  # noqa: F401  (libfuse2 must load)
except (ImportError, OSError) as exc:  # pragma: no cover - depends on the machine
    pytestmark.append(pytest.mark.skip(reason=f"fusepy/libfuse2 unusable: {exc}"))


def run(coro: Callable[[], Awaitable[T]], limit: float = 30.0) -> T:
    async def bounded() -> T:
        with anyio.fail_after(limit):
            return await coro()

    return asyncio.run(bounded())


def one_round(probe: MountsProbe) -> list[Reading]:
    async def go() -> list[Reading]:
        try:
            return list(await probe.collect())
        finally:
            await probe.aclose()

    return run(go)


def wait_for(cond: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _mounted(pid: int, mnt: Path) -> bool:
    try:
        text = Path(f"/proc/{pid}/mounts").read_text()
    except OSError:
        return False
    return any(line.split(" ")[1:3] == [str(mnt), "fuse.sshfs"] for line in text.splitlines())


@contextlib.contextmanager
def fuse_fs(mnt: Path, *, release: Path | None = None, private: bool, ro: bool = False) -> Iterator[int]:
    """Mount blockfs on ``mnt``; yields the daemon's pid. Always released on the way out."""
    argv = [sys.executable, str(BLOCKFS), str(mnt)]
    if release is not None:
        argv += ["--release", str(release)]
    if ro:
        argv.append("--ro")
    if private:
        argv = ["unshare", "--mount", "--propagation", "private", "--", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: _mounted(proc.pid, mnt) or proc.poll() is not None, "the FUSE mount")
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.skip(f"FUSE daemon could not mount: {err.strip()[:300]}")
        yield proc.pid
    finally:
        proc.kill()  # the connection dies with the daemon: every request waiting on it fails at once
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
        if not private:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10, check=False)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # not tmp_path: nothing may walk this tree while a mount on it hangs, and it is removed only after release
    d = Path(tempfile.mkdtemp(prefix="hoststamp-mounts-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def by_target(readings: list[Reading], target: str) -> Reading:
    [r] = [r for r in readings if r.subject != "summary" and r.output["target"] == target]
    return r


def state_of(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2]


def workers_blocked_on(path: str) -> list[int]:
    """Pids of our checker children whose current request is stuck in the kernel (state D)."""
    me = str(os.getpid())
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[1] == me and b"_statworker.py" in cmd and fields[0] == "D":
            found.append(int(name))
    return found


def hung_options(pid: int, stat_timeout: float = 1.0) -> MountsOptions:
    return MountsOptions(proc_mounts=f"/proc/{pid}/mounts", rootfs=f"/proc/{pid}/root", containers=False,
                         stat_timeout=stat_timeout)


def test_hung_mount_is_stale_in_time_with_one_child_and_a_live_loop(workdir: Path) -> None:
    mnt, release = workdir / "remote", workdir / "release"
    mnt.mkdir()
    with fuse_fs(mnt, release=release, private=True) as pid:
        probe = MountsProbe(hung_options(pid))

        async def scenario() -> None:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.02)
                    ticks += 1

            task = asyncio.create_task(ticker())
            try:
                t0 = time.monotonic()
                first = by_target(list(await probe.collect()), str(mnt))
                took = time.monotonic() - t0
                during = ticks
                assert first.output["status"] == "stale"
                assert first.output["fstype"] == "fuse.sshfs"
                assert first.output["source"] == "tester@fileserver:/export"
                assert "within 1 s" in first.output["error"]
                assert first.output["capacity"] is None
                assert took < 1.0 + 4.0  # its 1 s, and room for a loaded machine: a stat waited for never returns
                assert during >= 10, "the event loop stalled while the mount hung"

                # the child really is in uninterruptible sleep, and it is the only one
                [(key, child)] = probe.checker.stuck.items()
                wait_for(lambda: state_of(child) == "D", "the checker to sleep in D", 5)
                assert workers_blocked_on(str(mnt)) == [child]

                spawned = probe.checker.spawned
                second = by_target(list(await probe.collect()), str(mnt))
                assert second.output["status"] == "stale"
                assert second.output["stale_since"] == first.output["stale_since"]
                assert second.output["cached"] is False  # a stale verdict is never served from the cache
                assert probe.checker.spawned == spawned, "a second child was started for a stuck mount"
                assert probe.checker.stuck == {key: child}
                assert workers_blocked_on(str(mnt)) == [child]

                # the server comes back: the stuck child ends and is reaped without being waited on
                release.touch()
                deadline = time.monotonic() + 10
                while probe.checker.stuck and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert probe.checker.stuck == {}
                assert probe.checker.pending_exit == 0
                with pytest.raises(ChildProcessError):
                    os.waitpid(child, os.WNOHANG)  # already reaped: no zombie left

                third = by_target(list(await probe.collect()), str(mnt))
                assert third.output["status"] == "ok"
                assert third.output["capacity"]["size_bytes"] == 1000 * 4096
            finally:
                task.cancel()
                await probe.aclose()

        run(scenario)


class TickProbe(Probe):
    """Another probe on a short schedule (not registered)."""

    name = "tick"

    async def collect(self) -> list[Reading]:
        return [Reading(probe="tick", subject="tick", output={})]


def test_other_probes_keep_their_schedule_while_a_mount_hangs(workdir: Path) -> None:
    mnt, release = workdir / "remote", workdir / "release"
    mnt.mkdir()
    with fuse_fs(mnt, release=release, private=True) as pid:
        probe = MountsProbe(hung_options(pid))
        got: list[Reading] = []

        async def submit(readings: list[Reading]) -> None:
            got.extend(readings)

        def runner(p: Probe, interval: float) -> ProbeRunner:
            cfg = ProbeConfig(name=p.name, enabled=True, interval=interval, timeout=5.0, jitter=0.0, options=None)
            return ProbeRunner(p, cfg, submit, ProbeStats())  # type: ignore[arg-type]

        mounts, tick = runner(probe, 0.5), runner(TickProbe(None, None), 0.05)  # type: ignore[arg-type]

        async def scenario() -> None:
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(mounts.run)
                    tg.start_soon(tick.run)
                    await anyio.sleep(2.5)
                    tg.cancel_scope.cancel()
            finally:
                await probe.aclose()

        run(scenario)
    stale = [r for r in got if r.probe == "mounts" and r.subject == str(mnt)]
    assert stale and all(r.output["status"] == "stale" for r in stale)
    assert mounts.stats.runs >= 2 and mounts.stats.failures == 0
    # one child for the whole hang, however many rounds. A check killed at its deadline before the FUSE daemon
    # read its request ends (the kernel lets a fatal signal take back a request still queued): only a child that
    # has ended is replaced
    assert probe.checker.spawned <= 1 + probe.checker.reaped
    # 2.5 s at one round per 50 ms would be 50 rounds; a probe blocked behind the mount would get 1 or 2
    assert tick.stats.runs >= 20


def test_cancelled_round_leaves_the_child_stuck_not_waited_for(workdir: Path) -> None:
    mnt, release = workdir / "remote", workdir / "release"
    mnt.mkdir()
    with fuse_fs(mnt, release=release, private=True) as pid:
        probe = MountsProbe(hung_options(pid, stat_timeout=30.0))

        async def scenario() -> int:
            try:
                # the runner's own deadline ends the round long before stat_timeout
                with anyio.move_on_after(0.5) as scope:
                    await probe.collect()
                assert scope.cancelled_caught
                [child] = probe.checker.stuck.values()
                spawned = probe.checker.spawned
                t0 = time.monotonic()
                readings = list(await probe.collect())
                assert time.monotonic() - t0 < 1.0  # answered from the stuck set, not by waiting
                assert by_target(readings, str(mnt)).output["status"] == "stale"
                assert probe.checker.spawned == spawned
                summary = readings[-1]
                assert summary.kind == "summary"
                assert summary.output["stale_total"] == 1
                assert summary.output["stuck_children"] == 1
                assert child in workers_blocked_on(str(mnt)) or state_of(child) in "DZ"
                return child
            finally:
                await probe.aclose()

        child = run(scenario)
    # the daemon is gone: its connection was aborted, so the child could end; nothing waits on it
    wait_for(lambda: not Path(f"/proc/{child}").exists() or state_of(child) == "Z", "the child to end")


def test_healthy_and_readonly_fuse_mounts_from_the_real_proc_mounts(workdir: Path) -> None:
    rw, ro = workdir / "rw", workdir / "ro"
    rw.mkdir()
    ro.mkdir()
    with fuse_fs(rw, private=False), fuse_fs(ro, private=False, ro=True):
        readings = one_round(MountsProbe(MountsOptions(fstypes=("fuse.sshfs",), containers=False, stat_timeout=5.0)))
    ok, readonly = by_target(readings, str(rw)), by_target(readings, str(ro))
    assert ok.output["status"] == "ok"
    assert ok.output["readonly"] is False
    assert ok.output["error"] is None
    assert ok.output["capacity"] == {
        "size_bytes": 4096000, "used_bytes": 600 * 4096, "free_bytes": 400 * 4096, "avail_bytes": 300 * 4096,
        "files": 50, "files_free": 20, "used_ratio": round(600 / 900, 4),
    }
    assert ok.inputs == ("/proc/mounts",)
    assert readonly.output["status"] == "readonly"
    assert readonly.output["readonly"] is True
    assert readonly.output["capacity"]["size_bytes"] == 4096000
    assert ok.output["namespace"] == "host" and ok.output["container"] is None


def _cgroup2() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split(" ")
        sep = parts.index("-")
        if parts[sep + 1] == "cgroup2":
            return Path(parts[4])
    return None


CONTAINER_SH = r"""
set -e
R="$1"
mount -t tmpfs -o size=1m ctroot "$R"
mkdir "$R/usr" "$R/data" "$R/proc"
mount --bind /usr "$R/usr"
for d in bin sbin lib lib64; do [ -e "/$d" ] && ln -s "usr/$d" "$R/$d"; done
mount -t tmpfs -o size=8m ctdata "$R/data"
mount -t proc proc "$R/proc"
exec chroot "$R" /usr/bin/sleep 60
"""


def test_container_mounts_are_found_through_proc_pid_root(workdir: Path) -> None:
    root = workdir / "ctroot"
    root.mkdir()
    child = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", CONTAINER_SH,
                              "sh", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    group: Path | None = None
    try:
        # ready once chroot has exec'd sleep (every mount is in place by then)
        wait_for(lambda: child.poll() is not None or Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(
            b"/usr/bin/sleep\0"), "the container")
        if child.poll() is not None:
            pytest.skip(f"cannot build the container: {child.stderr.read().decode()[:300] if child.stderr else ''}")
        assert "ctdata" not in Path("/proc/self/mounts").read_text()  # invisible from here
        name = f"hs-test-{uuid.uuid4().hex[:8]}"
        v2 = _cgroup2()
        if v2 is not None:
            with contextlib.suppress(OSError):
                (v2 / f"lxc.payload.{name}").mkdir()
                group = v2 / f"lxc.payload.{name}"
                (group / "cgroup.procs").write_text(str(child.pid))
        readings = one_round(MountsProbe(MountsOptions(fstypes=("nfs*",), containers=True, stat_timeout=5.0)))
        ns = int(os.readlink(f"/proc/{child.pid}/ns/mnt").split("[")[1].rstrip("]"))
        mine = [r for r in readings if r.output.get("container") and r.output["container"]["mntns"] == ns]
        by = {r.output["target"]: r for r in mine}
        assert set(by) == {"/", "/usr", "/data"}  # /proc is a pseudo file system: skipped
        data = by["/data"]
        assert data.output["path"] == f"/proc/{child.pid}/root/data"
        assert data.output["capacity"]["size_bytes"] == 8 << 20
        assert data.output["status"] == "ok" and data.output["remote"] is False
        assert data.output["namespace"] == "container"
        assert data.output["container"]["pid"] == child.pid
        assert data.inputs == (f"/proc/{child.pid}/mountinfo",)
        assert by["/"].output["capacity"]["size_bytes"] == 1 << 20
        named = group is not None and (group / "cgroup.procs").read_text().split() == [str(child.pid)]
        if named:
            assert data.output["container"]["name"] == name
            assert data.output["container"]["runtime"] == "lxc"
            assert data.subject == f"{name}:/data"
        else:
            assert data.subject == f"mntns-{ns}:/data"
        assert readings[-1].output["containers"] >= 1
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stderr:
            child.stderr.close()
        if group is not None:
            wait_for(lambda: not (group / "cgroup.procs").read_text().strip(), "the cgroup to empty", 5)
            group.rmdir()
