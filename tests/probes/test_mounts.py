"""The ``mounts`` probe on fixture trees (a Proxmox host's table, a /proc with containers), its
checker children on real paths, the verdict rules and the options.

Checks here run in real worker processes against real directories of the fixture trees; the
readings are compared with stored expected files (``expected.json`` beside each tree) after the
fields that depend on the machine (times, capacities, absolute paths) are taken out.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from agent import schema
from agent.errors import ConfigError
from agent.hostfs.mounts import MountEntry
from agent.model import Reading
from agent.probes import registry
from agent.probes._mntns import scan_namespaces
from agent.probes._statchild import StatChecker, StatOutcome
from agent.probes.mounts import MountsOptions, MountsProbe, capacity, reusable, verdict

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"
PVE = HOSTS / "mounts-pve"
CT = HOSTS / "mounts-containers"
T = TypeVar("T")
VOLATILE = ("checked_at", "check_seconds", "capacity", "stale_since")


def run(coro: Callable[[], Awaitable[T]], limit: float = 30.0) -> T:
    async def bounded() -> T:
        with anyio.fail_after(limit):
            return await coro()

    return asyncio.run(bounded())


def collect(probe: MountsProbe, rounds: int = 1) -> list[list[Reading]]:
    async def go() -> list[list[Reading]]:
        try:
            return [list(await probe.collect()) for _ in range(rounds)]
        finally:
            await probe.aclose()

    return run(go)


def stable(readings: list[Reading], base: Path) -> list[dict[str, Any]]:
    """Readings as plain data, without what differs between machines and runs."""
    out = []
    for r in readings:
        o = {k: v for k, v in r.output.items() if k not in VOLATILE}
        if "path" in o:
            o["path"] = o["path"].replace(str(base), "<fixture>")
        out.append({"subject": r.subject, "kind": r.kind, "type": r.type,
                    "inputs": [i.replace(str(base), "<fixture>") for i in r.inputs], "output": o})
    return out


def golden(name: Path, got: list[dict[str, Any]]) -> None:
    if os.environ.get("HOSTSTAMP_REGOLD"):
        name.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(name.read_text())


def pve_options(**kw: Any) -> MountsOptions:
    return MountsOptions(proc_mounts=str(PVE / "proc" / "mounts"), rootfs=str(PVE / "rootfs"), containers=False,
                         **kw)


def test_registered_under_its_name() -> None:
    assert registry.get("mounts") is MountsProbe


def test_proxmox_host_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    [readings] = collect(MountsProbe(pve_options()))
    golden(PVE / "expected.json", stable(readings, PVE))
    by = {r.subject: r.output for r in readings}
    assert by["/mnt/pve/backup"]["capacity"]["size_bytes"] > 0  # a real directory of this checkout
    assert by["/home/ops/remote"]["capacity"] is None  # no such directory under rootfs
    assert by["/home/ops/remote"]["error"] == "stat: No such file or directory"


def test_results_are_reused_for_cache_ttl_only() -> None:
    first, second = collect(MountsProbe(pve_options(cache_ttl=3600.0)), rounds=2)
    assert first[-1].output["checks_started"] == 4 and first[-1].output["checks_cached"] == 0
    # a failed check (a target not there) is made again; ok and readonly results are reused
    failed = {r.subject for r in first[:-1] if r.output["status"] == "failed"}
    assert failed == {"/home/ops/remote"}
    assert second[-1].output["checks_started"] == 1 and second[-1].output["checks_cached"] == 3
    assert all(r.output["cached"] == (r.subject not in failed) for r in second[:-1])
    assert [r.output["checked_at"] for r in first[:-1] if r.subject not in failed] == \
        [r.output["checked_at"] for r in second[:-1] if r.subject not in failed]
    rounds = collect(MountsProbe(pve_options(cache_ttl=0.0)), rounds=3)
    assert all(r[-1].output["checks_started"] == 4 for r in rounds)
    assert not any(r.output["cached"] for r in rounds[2][:-1])
    # the workers of the first round serve the later ones: no child is started after it
    assert {r[-1].output["children_spawned"] for r in rounds} == {rounds[0][-1].output["children_spawned"]}


def test_a_failed_check_is_not_reused_and_a_target_put_right_is_ok_next_round(tmp_path: Path) -> None:
    table = tmp_path / "mounts"
    table.write_text(f"srv:/ro {tmp_path}/later nfs ro 0 0\n")
    probe = MountsProbe(MountsOptions(proc_mounts=str(table), containers=False, cache_ttl=3600.0))

    async def rounds() -> list[list[Reading]]:
        try:
            first = list(await probe.collect())
            (tmp_path / "later").mkdir()
            return [first, list(await probe.collect())]
        finally:
            await probe.aclose()

    first, second = run(rounds)
    assert first[0].output["status"] == "failed"
    assert second[0].output["status"] == "readonly" and second[0].output["cached"] is False


def test_only_configured_fstypes() -> None:
    [readings] = collect(MountsProbe(pve_options(fstypes=("cifs", "ext*"))))
    assert [r.subject for r in readings] == ["/", "/srv/share", "summary"]


def test_a_mount_hidden_under_a_later_one_on_its_target_is_counted(tmp_path: Path) -> None:
    """Two mounts on one target: a check reaches only the top one, which is reported; the hidden one is
    counted in the summary rather than dropped without a word."""
    (tmp_path / "mnt").mkdir()
    table = tmp_path / "mounts"
    table.write_text(f"srv:/old {tmp_path}/mnt nfs4 rw 0 0\nsrv:/new {tmp_path}/mnt nfs4 rw 0 0\n"
                     f"srv:/other {tmp_path} nfs4 rw 0 0\n")
    [readings] = collect(MountsProbe(MountsOptions(proc_mounts=str(table), containers=False)))
    summary = readings[-1].output
    assert (summary["mounts_total"], summary["shadowed_total"]) == (2, 1)
    assert {r.output["source"] for r in readings[:-1]} == {"srv:/new", "srv:/other"}


def test_container_fixture() -> None:
    opts = MountsOptions(proc_mounts=str(CT / "proc-mounts"), proc_root=str(CT / "proc"))
    [readings] = collect(MountsProbe(opts))
    golden(CT / "expected.json", stable(readings, CT))
    by = {r.subject: r.output for r in readings}
    assert by["3f4e8c1d2b6a:/data"]["capacity"]["size_bytes"] > 0


def test_namespace_scan_fixture() -> None:
    scan = scan_namespaces(str(CT / "proc"))
    assert scan.own_mntns == 4026531840
    assert [(c.mntns, c.pid, c.hint and c.hint.runtime, c.hint and c.hint.name) for c in scan.containers] == [
        (4026532300, 400, "docker", None), (4026532400, 500, "lxc", "101"),
    ]
    assert scan.skipped == 2  # the kernel thread and the sandboxed service
    assert scan.errors == ()


def test_namespace_scan_of_a_missing_proc(tmp_path: Path) -> None:
    scan = scan_namespaces(str(tmp_path / "nope"))
    assert scan.containers == () and scan.errors


def test_unreadable_mount_table_is_a_probe_error(tmp_path: Path) -> None:
    from agent.errors import ProbeError

    probe = MountsProbe(MountsOptions(proc_mounts=str(tmp_path / "missing"), containers=False))
    with pytest.raises(ProbeError, match="missing"):
        collect(probe)
    assert MountsProbe.unavailable(probe.options) is not None
    assert MountsProbe.unavailable(MountsOptions()) is None


# -- the checker on its own ------------------------------------------------------------------------


def test_checker_paths_with_newlines_and_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/new\nline \xff")
    os.mkdir(odd)
    checker = StatChecker(5.0)

    async def go() -> list[StatOutcome]:
        try:
            return await checker.check_many([("a", odd, True), ("b", str(tmp_path / "absent"), False)])
        finally:
            await checker.aclose()

    ok, absent = run(go)
    assert ok.error is None and ok.stats and ok.stats["st_dev"] == os.stat(tmp_path).st_dev
    assert (absent.errno, absent.op) == (errno.ENOENT, "stat")
    assert checker.spawned == 2  # one lane for the remote check, one for the local one


def test_checker_replaces_a_worker_that_died(tmp_path: Path) -> None:
    checker = StatChecker(5.0)

    async def go() -> tuple[StatOutcome, StatOutcome]:
        try:
            first = await checker.check("k", str(tmp_path))
            assert first.pid is not None
            os.kill(first.pid, signal.SIGKILL)
            for _ in range(500):
                if not os.path.exists(f"/proc/{first.pid}/status") or "zombie" in Path(
                        f"/proc/{first.pid}/status").read_text():
                    break
                await asyncio.sleep(0.01)
            return first, await checker.check("k", str(tmp_path))
        finally:
            await checker.aclose()

    first, second = run(go)
    assert second.error is None and second.stats is not None
    assert second.pid != first.pid and checker.spawned == 2


def _check_once(checker: StatChecker, path: Path) -> StatOutcome:
    async def go() -> StatOutcome:
        try:
            return await checker.check("k", str(path))
        finally:
            await checker.aclose()

    return run(go)


def _interpreter(tmp_path: Path, script: str) -> str:
    """A stand-in for the Python that runs the worker, as a shell script."""
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_a_new_workers_start_up_does_not_count_against_the_deadline(tmp_path: Path) -> None:
    """A slow start (here 2.5 s, against a deadline of 1.5 s) is not a stale mount."""
    checker = StatChecker(1.5, python=_interpreter(tmp_path, f'sleep 2.5\nexec {sys.executable} "$@"'))
    got = _check_once(checker, tmp_path)
    assert not got.timed_out and got.error is None and got.stats is not None
    assert checker.spawned == 1


def test_a_worker_that_never_starts_is_an_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.probes import _statchild

    monkeypatch.setattr(_statchild, "START_TIMEOUT", 0.5)
    checker = StatChecker(5.0, python=_interpreter(tmp_path, "exec sleep 30"))
    got = _check_once(checker, tmp_path)
    assert not got.timed_out and got.error == "checker failed: did not start within 0.5 s"
    assert "k" not in checker.stuck


def test_checker_rejects_a_bad_timeout() -> None:
    with pytest.raises(ValueError):
        StatChecker(0)


def test_aclose_ends_idle_workers(tmp_path: Path) -> None:
    checker = StatChecker(5.0)

    async def go() -> int:
        pid = (await checker.check("k", str(tmp_path))).pid
        assert pid is not None and checker.idle == 1
        await checker.aclose()
        return pid

    pid = run(go)
    assert checker.idle == 0 and checker.pending_exit == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# -- verdicts --------------------------------------------------------------------------------------

RW = MountEntry("h:/x", "/mnt/x", "nfs4", "rw,relatime")
RO = MountEntry("h:/x", "/mnt/x", "nfs4", "ro,relatime")
STATS = {"st_dev": 1, "frsize": 4096, "blocks": 100, "bfree": 40, "bavail": 30, "files": 9, "ffree": 3, "flag": 0}


def outcome(**kw: Any) -> StatOutcome:
    return StatOutcome(path="/mnt/x", started=0.0, elapsed=0.0, **kw)


def test_verdicts() -> None:
    assert verdict(RW, outcome(stats=STATS))["status"] == "ok"
    assert verdict(RO, outcome(stats=STATS))["status"] == "readonly"
    assert verdict(RW, outcome(stats={**STATS, "flag": os.ST_RDONLY}))["status"] == "readonly"
    stale = verdict(RO, outcome(timed_out=True, error="stat did not return within 5 s"))
    assert stale == {"status": "stale", "readonly": True, "error": "stat did not return within 5 s", "capacity": None}
    for code in (errno.ESTALE, errno.ENOTCONN, errno.EIO, errno.EHOSTDOWN):
        assert verdict(RW, outcome(errno=code, error=os.strerror(code), op="statvfs"))["status"] == "stale"
    denied = verdict(RW, outcome(errno=errno.EACCES, error="Permission denied", op="stat"))
    assert denied["status"] == "ok" and denied["error"] == "stat: Permission denied"  # the mount answered
    # no answer from the mount at all: its health is not known, and it is not counted as ok
    for code, op, error in ((errno.ENOENT, "stat", "No such file or directory"),
                            (errno.ENAMETOOLONG, "stat", "File name too long"),
                            (None, "", "checker failed: worker exited")):
        failed = verdict(RO, outcome(errno=code, error=error, op=op))
        assert failed["status"] == "failed" and failed["readonly"] and failed["capacity"] is None


def test_only_fresh_and_healthy_results_are_reused() -> None:
    ok = StatOutcome(path="/m", started=100.0, elapsed=0.0, stats=STATS)
    assert reusable(ok, now=129.0, ttl=30.0)
    assert not reusable(ok, now=130.0, ttl=30.0)
    assert not reusable(ok, now=100.0, ttl=0.0)
    dead = StatOutcome(path="/m", started=100.0, elapsed=0.0, errno=errno.ESTALE, error="Stale file handle")
    hung = StatOutcome(path="/m", started=100.0, elapsed=5.0, timed_out=True, error="...")
    assert not reusable(dead, now=100.5, ttl=30.0)
    assert not reusable(hung, now=100.5, ttl=30.0)
    denied = StatOutcome(path="/m", started=100.0, elapsed=0.0, errno=errno.EACCES, error="Permission denied")
    assert reusable(denied, now=100.5, ttl=30.0)


def test_capacity_like_df() -> None:
    assert capacity(STATS) == {"size_bytes": 409600, "used_bytes": 245760, "free_bytes": 163840,
                               "avail_bytes": 122880, "files": 9, "files_free": 3, "used_ratio": 0.6667}
    assert capacity({**STATS, "blocks": 0, "bfree": 0, "bavail": 0})["used_ratio"] is None


# -- options ---------------------------------------------------------------------------------------


def test_options_from_toml_tables() -> None:
    o = schema.build(MountsOptions, {"fstypes": ["nfs*"], "stat_timeout": 2, "cache_ttl": 0,
                                     "proc_mounts": "/x", "containers": False}, prefix="probes.mounts", file="f")
    assert (o.fstypes, o.stat_timeout, o.cache_ttl, o.containers) == (("nfs*",), 2.0, 0.0, False)
    for bad in ({"stat_timeout": 0}, {"cache_ttl": -1}, {"max_workers": 0}, {"fstypes": [""]}, {"nope": 1}):
        with pytest.raises(ConfigError):
            schema.build(MountsOptions, bad, prefix="probes.mounts", file="f")
