"""A failed round's error reading still says where the probe tried to read (``probeSource``, ``inputs``)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from agent.config import ProbeConfig
from agent.pipeline.runner import ProbeRunner
from agent.pipeline.stats import PipelineStats
from agent.probes.base import Probe, ProbeContext
from agent.probes.cgroup import CgroupOptions, CgroupProbe
from agent.probes.link import LinkOptions, LinkProbe
from agent.probes.lve import LveOptions, LveProbe
from agent.probes.mounts import MountsOptions, MountsProbe
from agent.probes.taskstats import TaskstatsOptions, TaskstatsProbe


def _failed_round(probe: Probe) -> tuple[str, tuple[str, ...], str | None]:
    cfg = ProbeConfig(probe.name, True, interval=10.0, timeout=10.0, jitter=0.0, options=probe.options)
    runner = ProbeRunner(probe, cfg, _nothing, PipelineStats().probe(probe.name))
    (r,) = anyio.run(runner.collect_once)
    return r.probe_source, r.inputs, r.error


async def _nothing(_readings: object) -> None:
    return None


def test_error_readings_name_what_was_read(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    ctx = ProbeContext()
    cases: list[tuple[Probe, str, tuple[str, ...]]] = [
        (LveProbe(LveOptions(path=str(tmp_path / "dir")), ctx), f"procfs:{tmp_path}/dir", (f"{tmp_path}/dir",)),
        (CgroupProbe(CgroupOptions(root=str(tmp_path / "none")), ctx), f"cgroup2:{tmp_path}/none",
         (f"{tmp_path}/none",)),
        (CgroupProbe(CgroupOptions(mountinfo=str(tmp_path / "no-mountinfo")), ctx),
         f"procfs:{tmp_path}/no-mountinfo", (f"{tmp_path}/no-mountinfo",)),
        (LinkProbe(LinkOptions(netns="hoststamp-no-such-netns"), ctx), "rtnetlink:hoststamp-no-such-netns",
         ("RTM_GETLINK",)),
        (MountsProbe(MountsOptions(proc_mounts=str(tmp_path / "none")), ctx), f"procfs:{tmp_path}/none",
         (f"{tmp_path}/none",)),
    ]
    for probe, source, inputs in cases:
        got_source, got_inputs, error = _failed_round(probe)
        assert error, probe.name
        assert (got_source, got_inputs) == (source, inputs), probe.name


def test_a_taskstats_error_reading_names_its_netlink_family() -> None:
    probe = TaskstatsProbe(TaskstatsOptions(pids=(1,)), ProbeContext())

    async def broken() -> list[object]:
        raise OSError("netlink is gone")

    probe.collect = broken  # type: ignore[method-assign]
    source, inputs, error = _failed_round(probe)
    assert error == "netlink is gone" and source == "genetlink:TASKSTATS"
    assert inputs == ("genetlink:TASKSTATS", "/proc")  # what it reads, as a reading of the probe says


@pytest.mark.parametrize("cls", [LveProbe, CgroupProbe, LinkProbe, MountsProbe, TaskstatsProbe])
def test_every_probe_says_where_it_reads(cls: type[Probe]) -> None:
    source, _inputs = cls(cls.Options(), ProbeContext()).provenance()
    assert source
