"""The ``taskstats`` probe against the real kernel: readings, selection, cgroupstats, exits, no CAP_NET_ADMIN."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import parse
from agent.errors import ConfigError
from agent.model import Reading
from agent.netlink import has_net_admin, unpack_taskstats
from agent.netlink.structs import pack_taskstats
from agent.probes import registry
from agent.probes.taskstats import NEEDS_CAP, TaskstatsOptions, TaskstatsProbe, select_pids, taskstats_output
from tests.netlink.caps import run_without_net_admin

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
needs_admin = pytest.mark.skipif(not has_net_admin(), reason="taskstats queries need CAP_NET_ADMIN")
CPU_V1 = Path("/sys/fs/cgroup/cpu")
UNIFIED = Path("/sys/fs/cgroup/unified")


async def collect(**options: object) -> list[Reading]:
    probe = TaskstatsProbe(TaskstatsOptions(**options))  # type: ignore[arg-type]
    try:
        return list(await probe.collect())
    finally:
        await probe.aclose()


def test_registered_under_its_name() -> None:
    assert registry.get("taskstats") is TaskstatsProbe
    assert "taskstats" in registry.names()


def test_options_from_toml_are_strict() -> None:
    cfg = parse({"probes": {"taskstats": {"pids": [1], "exits": False, "cgroupstats": ["/sys/fs/cgroup/cpu"],
                                          "interval": 5}}})
    opts = cfg.probe("taskstats").options
    assert opts == TaskstatsOptions(pids=(1,), exits=False, cgroupstats=("/sys/fs/cgroup/cpu",))
    with pytest.raises(ConfigError) as info:
        parse({"probes": {"taskstats": {"pid": [1]}}})
    assert "probes.taskstats.pid" in str(info.value)
    with pytest.raises(ConfigError):
        parse({"probes": {"taskstats": {"by": "thread"}}})
    for bad in (0, -5, 4294967296, 1 << 22 + 1):
        with pytest.raises(ConfigError) as info:
            parse({"probes": {"taskstats": {"pids": [1, bad]}}})
        assert "probes.taskstats" in str(info.value) and "pids must be process ids" in str(info.value)


@needs_admin
async def test_own_pid_reading() -> None:
    (r,) = await collect(pids=(os.getpid(),))
    assert r.type == "io.hoststamp.host.v1.taskstats"
    assert r.subject == str(os.getpid()) and r.error is None
    assert r.output["ac_pid"] == os.getpid()
    assert r.output["ac_comm"] == Path("/proc/self/comm").read_text().strip()
    assert r.output["version"] >= 1
    assert r.inputs == ("genetlink:TASKSTATS",)
    json.dumps(r.data())  # JSON-ready as it stands


@needs_admin
async def test_every_process_and_vanished_pids_skipped() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    got = await collect()
    subjects = {r.subject for r in got if r.error is None}
    assert str(os.getpid()) in subjects and "1" in subjects
    assert not [r for r in got if r.error]
    (only,) = await collect(pids=(gone.pid, os.getpid()))  # ESRCH: skipped, not an error reading
    assert only.subject == str(os.getpid())


@needs_admin
async def test_selection_by_command_and_cgroup(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        got = await collect(commands=("sleep",))
        assert str(child.pid) in {r.subject for r in got}
        assert all(r.output["ac_comm"] == "sleep" for r in got)
        fake = tmp_path / "cg"
        fake.mkdir()
        (fake / "cgroup.procs").write_text(f"{child.pid}\n{os.getpid()}\n")
        got = await collect(cgroups=(str(fake),))
        assert sorted(r.subject for r in got) == sorted([str(child.pid), str(os.getpid())])
    finally:
        child.kill()
        child.wait()


def test_select_pids_reads_an_injected_proc(tmp_path: Path) -> None:
    for pid, comm in ((10, "alpha"), (11, "beta"), (12, "alpha")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    (tmp_path / "self").mkdir()
    assert select_pids(TaskstatsOptions(proc=str(tmp_path))) == ([10, 11, 12], [])
    assert select_pids(TaskstatsOptions(proc=str(tmp_path), commands=("alpha",), pids=(99,))) == ([10, 12, 99], [])
    pids, problems = select_pids(TaskstatsOptions(proc=str(tmp_path), cgroups=(str(tmp_path / "nocg"),)))
    assert pids == [] and problems == [f"cannot read {tmp_path / 'nocg' / 'cgroup.procs'}: No such file or directory"]


def test_select_pids_passes_over_names_no_process_can_have(tmp_path: Path) -> None:
    """A pid beyond what the kernel gives (or the netlink request holds) was a crash of the whole round."""
    for name in ("7", "99999999999999999999", "4194305", "0", "٣"):
        (tmp_path / name).mkdir()
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "cgroup.procs").write_text("8\n99999999999999999999999\n-1\n4194304\nabc\n")
    assert select_pids(TaskstatsOptions(proc=str(tmp_path))) == ([7], [])
    assert select_pids(TaskstatsOptions(proc=str(tmp_path), cgroups=(str(cg),))) == ([8, 4194304], [])


def test_output_keeps_kernel_names_and_json_safe_integers() -> None:
    stats = unpack_taskstats(pack_taskstats({"ac_pid": 5, "ac_comm": "w", "cpu_delay_min": 2**64 - 1}, 16))
    out = taskstats_output(stats)
    assert out["ac_pid"] == 5 and out["ac_comm"] == "w"
    assert out["cpu_delay_min"] == str(2**64 - 1)
    assert "decoder_note" not in out
    newer = bytearray(pack_taskstats({}, 16))
    newer[0] = 17
    assert "newer" in taskstats_output(unpack_taskstats(bytes(newer)))["decoder_note"]


@pytest.mark.skipif(not CPU_V1.is_dir() or not (UNIFIED / "cgroup.controllers").exists(),
                    reason="needs a cgroup v1 cpu hierarchy and a cgroup2 mount")
async def test_cgroupstats_readings() -> None:
    got = await collect(pids=(os.getpid(),), cgroupstats=(str(CPU_V1), str(UNIFIED)))
    stats = {r.subject: r for r in got if r.kind == "cgroupstats"}
    v1, v2 = stats[str(CPU_V1)], stats[str(UNIFIED)]
    assert v1.type == "io.hoststamp.host.v1.taskstats.cgroupstats" and v1.error is None
    assert set(v1.output) == {"nr_sleeping", "nr_running", "nr_stopped", "nr_uninterruptible", "nr_io_wait"}
    assert v2.output == {} and v2.error is not None and "unsupported on cgroup v2" in v2.error


async def exits_of(argv: list[str], done: Callable[[Reading], bool], status: int,
                   timeout: float = 15) -> tuple[list[Reading], int]:
    """Run the exit stream, start ``argv`` once it is live (exits of children show that), and collect until
    a reading of that child's pid satisfies ``done``; every reading, and the child's pid."""
    got: list[Reading] = []
    arrived = asyncio.Event()
    child_pid: list[int] = []

    async def emit(r: Reading) -> None:
        got.append(r)
        if child_pid and r.subject == str(child_pid[0]) and done(r):
            arrived.set()

    probe = TaskstatsProbe(TaskstatsOptions(exits=True))
    watcher = asyncio.create_task(probe.watch(emit))
    try:
        async with asyncio.timeout(timeout):
            while not got and not watcher.done():
                child = await asyncio.create_subprocess_exec("true")
                await child.wait()
                await asyncio.sleep(0.05)
            child = await asyncio.create_subprocess_exec(*argv)
            child_pid.append(child.pid)
            assert await child.wait() == status
            await arrived.wait()
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
        await probe.aclose()
    return got, child_pid[0]


@needs_admin
async def test_watch_streams_exits() -> None:
    got, pid = await exits_of(["sh", "-c", "exit 4"], lambda r: True, 4)
    (r,) = [r for r in got if r.subject == str(pid)]
    assert r.type == "io.hoststamp.host.v1.taskstats.exit" and r.kind == "exit"
    assert r.output["ac_pid"] == pid and r.output["exit_code"] == 4 and r.output["exit_signal"] == 0
    assert r.output["ac_comm"] == "sh"


#: a process whose main thread ends first (the raw exit system call ends one thread, not the group), and whose
#: other thread then ends the group with status 6: the group's totals come with that thread's exit record
MAIN_THREAD_FIRST = (
    "import ctypes, os, threading, time\n"
    "main = f'/proc/self/task/{os.getpid()}/stat'\n"
    "def last():\n"
    "    end = time.monotonic() + 20\n"
    "    while time.monotonic() < end:  # until the main thread has ended (a zombie until the group ends)\n"
    "        with open(main) as f:\n"
    "            if f.read().rsplit(')', 1)[1].split()[0] in 'ZX':\n"
    "                break\n"
    "        time.sleep(0.01)\n"
    "    os._exit(6)\n"
    "threading.Thread(target=last).start()\n"
    "ctypes.CDLL(None).syscall(60, 0)\n"
)


@needs_admin
async def test_a_process_whose_main_thread_ends_first_still_reports_its_end() -> None:
    got, pid = await exits_of([sys.executable, "-c", MAIN_THREAD_FIRST], lambda r: "group" in r.output, 6)
    mine = [r for r in got if r.subject == str(pid)]
    # the main thread's own exit (status 0), then the thread that ended the group, under the process's id
    assert [r.output["ac_pid"] == pid for r in mine] == [True, False]
    main, last = mine
    assert "group" not in main.output and main.output["exit_code"] == 0
    assert last.output["exit_code"] == 6 and last.output["ac_tgid"] == pid
    assert last.output["group"]["tgid"] == pid
    # threads that end while others go on stay out of the stream
    threads = [r for r in got if r.output.get("ac_tgid") not in (None, 0, r.output.get("ac_pid"))]
    assert all("group" in r.output and r.subject == str(r.output["ac_tgid"]) for r in threads)


async def test_watch_does_nothing_when_exits_are_off() -> None:
    got: list[Reading] = []

    async def emit(r: Reading) -> None:
        got.append(r)

    async with asyncio.timeout(5):
        await TaskstatsProbe(TaskstatsOptions(exits=False)).watch(emit)
    assert got == []


#: a child program's body: one collection, then five seconds of the exit stream, into ``got``
ONE_ROUND_AND_WATCH = (
    "from agent.probes.taskstats import TaskstatsOptions, TaskstatsProbe\n"
    "async def main():\n"
    "    probe = TaskstatsProbe(TaskstatsOptions())\n"
    "    got = list(await probe.collect())\n"
    "    async def emit(r):\n"
    "        got.append(r)\n"
    "    await asyncio.wait_for(probe.watch(emit), 5)\n"
    "    await probe.aclose()\n"
)


@needs_admin
def test_without_net_admin_one_clear_reading() -> None:
    code = (
        "import asyncio, json\n"
        + ONE_ROUND_AND_WATCH
        + "    print(json.dumps({'unavailable': TaskstatsProbe.unavailable(TaskstatsOptions()),\n"
        "                      'readings': [[r.type, r.subject, r.error, dict(r.output)] for r in got]}))\n"
        "asyncio.run(main())\n"
    )
    res = json.loads(run_without_net_admin(code).stdout)
    assert res["unavailable"] == NEEDS_CAP
    assert res["readings"] == [
        ["io.hoststamp.host.v1.taskstats", "taskstats", NEEDS_CAP, {}],
        ["io.hoststamp.host.v1.taskstats.exit", "taskstats", NEEDS_CAP, {}],
    ]


@needs_admin
def test_one_probe_across_event_loops() -> None:
    probe = TaskstatsProbe(TaskstatsOptions(pids=(os.getpid(),)))
    first = asyncio.run(probe.collect())  # the socket's reader follows the loop that uses it
    second = asyncio.run(probe.collect())
    asyncio.run(probe.aclose())
    assert [r.subject for r in first] == [r.subject for r in second] == [str(os.getpid())]


def test_in_a_user_namespace_the_kernel_refusal_is_one_clear_reading() -> None:
    """Root of a user namespace holds CAP_NET_ADMIN there, but taskstats wants it in the initial namespace."""
    code = (
        "import asyncio, json\n"
        "from agent.netlink import has_net_admin\n"
        + ONE_ROUND_AND_WATCH
        + "    print(json.dumps([has_net_admin(), [[r.type, r.error] for r in got]]))\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        proc = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", code],
                              capture_output=True, timeout=30, env=env)
    except FileNotFoundError:
        pytest.skip("no unshare(1)")
    if proc.returncode != 0 and b"unshare" in proc.stderr:
        pytest.skip(f"user namespaces unavailable: {proc.stderr.decode(errors='replace').strip()}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    capable, readings = json.loads(proc.stdout)
    assert capable is True  # so the refusal came from the kernel, not from the capability check
    assert readings == [["io.hoststamp.host.v1.taskstats", NEEDS_CAP],
                        ["io.hoststamp.host.v1.taskstats.exit", NEEDS_CAP]]


async def test_a_failed_round_says_what_it_read() -> None:
    """The runner's error reading for a round that failed (a /proc that is not there) names its inputs."""
    from agent.config import ProbeConfig
    from agent.pipeline.runner import ProbeRunner
    from agent.pipeline.stats import ProbeStats

    probe = TaskstatsProbe(TaskstatsOptions(proc="/nonexistent", exits=False))
    got: list[Reading] = []

    async def submit(readings: object) -> None:
        got.extend(readings)  # type: ignore[arg-type]

    cfg = ProbeConfig(name="taskstats", enabled=True, interval=60.0, timeout=5.0, jitter=0.0, options=probe.options)
    try:
        readings = await ProbeRunner(probe, cfg, submit, ProbeStats()).collect_once()
    finally:
        await probe.aclose()
    (r,) = readings
    assert r.error and "/nonexistent" in r.error
    assert r.inputs == ("genetlink:TASKSTATS", "/nonexistent") and r.probe_source == "genetlink:TASKSTATS"
