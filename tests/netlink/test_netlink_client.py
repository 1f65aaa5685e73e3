"""TaskstatsClient against the real kernel: own pid, a CPU burner, vanished pids, cgroupstats, EPERM."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ProbeError
from agent.netlink import (
    CgroupV2Unsupported,
    NetlinkError,
    NetlinkSocket,
    TaskStats,
    TaskstatsClient,
    family_cache_clear,
    has_net_admin,
    resolve_family_sync,
)
from agent.netlink.genl import build_getfamily, parse_families
from tests.netlink.caps import run_without_net_admin

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
needs_admin = pytest.mark.skipif(not has_net_admin(), reason="taskstats queries need CAP_NET_ADMIN")
CPU_V1 = Path("/sys/fs/cgroup/cpu")
UNIFIED = Path("/sys/fs/cgroup/unified")


def own_cpu_cgroup() -> Path | None:
    """The cgroup v1 ``cpu`` directory this process is in, if the host has one."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            d = CPU_V1 / path.lstrip("/")
            return d if d.is_dir() else None
    return None


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@needs_admin
async def test_own_pid() -> None:
    async with TaskstatsClient() as client:
        stats = await client.get(os.getpid())
    assert isinstance(stats, TaskStats)
    assert stats.get("ac_pid") == os.getpid()
    assert stats.get("ac_ppid") == os.getppid()
    assert stats.get("ac_comm") == Path("/proc/self/comm").read_text().strip()
    assert stats.version >= 16 or stats.note is None
    assert isinstance(stats.get("ac_utime"), int)


@needs_admin
async def test_thread_group_query() -> None:
    async with TaskstatsClient() as client:
        stats = await client.get(os.getpid(), tgid=True)
    assert stats.version >= 1
    assert isinstance(stats.get("ac_etime"), int) and stats.get("ac_etime", 0) > 0  # type: ignore[operator]


@needs_admin
async def test_cpu_burning_child_shows_utime_growing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        async with TaskstatsClient() as client:
            first = await client.get(child.pid)
            before = first.get("ac_utime")
            assert isinstance(before, int)
            after: int | str | None = before
            last = first
            for _ in range(200):  # bounded: at most ~10 s; the kernel charges utime in ticks
                await asyncio.sleep(0.05)
                last = await client.get(child.pid)
                after = last.get("ac_utime")
                if isinstance(after, int) and after > before:
                    break
            assert isinstance(after, int) and after > before
            # compared with a reading taken after the child ran: the first may predate its exec
            assert last.get("ac_comm") == Path(f"/proc/{child.pid}/comm").read_text().strip()
    finally:
        child.kill()
        child.wait()


@needs_admin
async def test_vanished_pid_is_esrch_and_batches_keep_order() -> None:
    gone = dead_pid()
    pids = [os.getpid(), gone, 1, os.getpid()]
    async with TaskstatsClient(window=2) as client:  # a small window: the batch goes out in several sends
        got = await client.get_many(pids * 50)
        with pytest.raises(NetlinkError) as info:
            await client.get(gone)
    assert info.value.errno == errno.ESRCH
    for pid, res in zip(pids * 50, got, strict=True):
        if pid == gone:
            assert isinstance(res, NetlinkError) and res.errno == errno.ESRCH
        else:
            assert isinstance(res, TaskStats) and res.get("ac_pid") == pid


@needs_admin
async def test_many_requests_in_flight_at_once() -> None:
    pids = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())
    async with TaskstatsClient(window=512) as client:
        results = await client.get_many(pids)
    found = {r.get("ac_pid") for r in results if isinstance(r, TaskStats)}
    assert os.getpid() in found and 1 in found
    assert client.sock.overruns == 0


async def test_family_is_resolved_once_and_cached() -> None:
    family_cache_clear()
    with NetlinkSocket() as sock:
        (fam,) = parse_families(await sock.request(build_getfamily(0, "TASKSTATS")))
    assert resolve_family_sync() == fam
    async with TaskstatsClient() as client:
        assert await client.family() == fam


@pytest.mark.skipif(not CPU_V1.is_dir(), reason="no cgroup v1 cpu hierarchy")
async def test_cgroupstats_on_v1() -> None:
    async with TaskstatsClient() as client:
        root = (await client.cgroupstats(CPU_V1)).as_dict()
        assert all(isinstance(v, int) and v >= 0 for v in root.values())
        mine = own_cpu_cgroup()
        if mine is not None:  # this process is in it, so at least one task is counted
            assert sum((await client.cgroupstats(mine)).as_dict().values()) >= 1


@pytest.mark.skipif(not (UNIFIED / "cgroup.controllers").exists(), reason="no cgroup2 mount at unified")
async def test_cgroupstats_on_v2_is_einval_named_as_such() -> None:
    async with TaskstatsClient() as client:
        with pytest.raises(CgroupV2Unsupported) as info:
            await client.cgroupstats(UNIFIED)
    assert info.value.errno == errno.EINVAL
    assert "cgroup v2" in str(info.value)


async def test_cgroupstats_on_a_missing_directory() -> None:
    async with TaskstatsClient() as client:
        with pytest.raises(ProbeError):
            await client.cgroupstats("/nonexistent/cgroup")


@needs_admin
def test_query_without_net_admin_is_eperm() -> None:
    code = (
        "import asyncio, os\n"
        "from agent.netlink import TaskstatsClient, has_net_admin\n"
        "async def main():\n"
        "    async with TaskstatsClient() as c:\n"
        "        got = await c.get_many([os.getpid(), 1])\n"
        "    print(has_net_admin(), [getattr(r, 'errno', None) for r in got])\n"
        "asyncio.run(main())\n"
    )
    out = run_without_net_admin(code).stdout.decode().split()
    assert out[0] == "False"
    assert " ".join(out[1:]) == f"[{errno.EPERM}, {errno.EPERM}]"


async def test_closed_socket_refuses_and_fails_pending() -> None:
    sock = NetlinkSocket()
    sock.close()
    with pytest.raises(ProbeError):
        await sock.transact([build_getfamily(0, "TASKSTATS")])
