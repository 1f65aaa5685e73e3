"""Change events and taskstats exits take the polled readings' path: stamped, signed, written by the file sink."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from agent.netlink import has_net_admin
from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.router import Pipeline
from agent.probes.cgroup import CgroupOptions, CgroupProbe
from agent.probes.taskstats import TaskstatsOptions, TaskstatsProbe
from agent.signing.event import verify_event
from agent.signing.keys import SigningKey
from agent.sinks.base import SinkContext
from agent.sinks.file import FileOptions, FileSink

pytestmark = [pytest.mark.anyio, pytest.mark.root]


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


async def test_cgroup_changes_and_exits_arrive_signed_in_the_file(cg_root: Path, tmp_path: Path) -> None:
    if not has_net_admin():
        pytest.skip("the taskstats exit stream needs CAP_NET_ADMIN")
    (cg_root / "job").mkdir()
    comm = "hswatchexit"
    exe = tmp_path / comm
    shutil.copy("/bin/sleep", exe)
    key = SigningKey.generate()
    out = tmp_path / "events.ndjson"
    stats = PipelineStats()
    queue = SinkQueue(1000)
    worker = SinkWorker(FileSink(str(out), FileOptions(fsync=False), SinkContext()), queue, stats.sink("file"))
    pipeline = Pipeline(Stamper(key, "host-test", SequenceStore(None)), [queue], stats)
    cgroup = CgroupProbe(CgroupOptions(root=str(cg_root)))
    tasks = TaskstatsProbe(TaskstatsOptions(commands=(comm,)))

    def both_told(pid: str) -> bool:
        events = _events(out)
        return any(e["type"].endswith("taskstats.exit") and e["subject"] == pid for e in events) and any(
            e["type"].endswith("cgroup.change") and e["subject"] == "/job"
            and e["data"]["output"].get("cgroup_events", {}).get("populated") == 0 for e in events)

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        tg.start_soon(cgroup.watch, pipeline.submit)
        tg.start_soon(tasks.watch, pipeline.submit)
        # a process moved into /job and killed, again until both watches (set up meanwhile) have told
        with anyio.fail_after(15):
            while True:
                proc = subprocess.Popen([str(exe), "30"])
                (cg_root / "job" / "cgroup.procs").write_text(str(proc.pid))
                proc.kill()
                proc.wait(timeout=10)
                with anyio.move_on_after(1):
                    while not both_told(str(proc.pid)):
                        await anyio.sleep(0.05)
                    break
        tg.cancel_scope.cancel()
    await tasks.aclose()
    events = _events(out)
    keys = {key.keyid: key.verify_key()}
    for e in events:
        verify_event(e, keys)  # raises on any problem
    kinds = {e["type"] for e in events}
    assert {"io.hoststamp.host.v1.cgroup.change", "io.hoststamp.host.v1.taskstats.exit"} <= kinds
    job = [e for e in events if e["subject"] == "/job"]
    # moved in and killed at once: the kernel may report both flips in one notification
    assert job and job[-1]["data"]["output"]["cgroup_events"]["populated"] == 0
    exit_event = next(e for e in events if e["type"].endswith("taskstats.exit"))
    assert exit_event["data"]["output"]["exit_signal"] == 9 and exit_event["hostid"] == "host-test"
    for src in {e["source"] for e in events}:
        seqs = [int(e["sequence"]) for e in events if e["source"] == src]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
