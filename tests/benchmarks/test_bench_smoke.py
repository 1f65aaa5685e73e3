"""Every benchmark still runs, on tiny inputs, and reports the figures RESULTS.md is made of.

Nothing here judges speed: the figures are only checked to be there and to be
numbers a measurement can give (positive and finite rates, ratios of them). A
benchmark that no longer starts, or that lost a figure, fails here rather than
at the next ``make bench``. Each runs in its own interpreter, as
``python -m benchmarks`` would run it after another.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: benchmark -> (tiny arguments for its run(), figures it must report)
CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "archive": (dict(n=300, rounds=1), {"floor_signs_per_s", "archive_events_per_s", "archive_over_floor",
                                         "archive_verifies"}),
    "delivery": (dict(n=300, rounds=1), {"readings_memory_queue_per_s", "readings_spool_batch_per_s",
                                          "spool_over_memory_queue"}),
    "file_sink": (dict(n=300, rounds=1), {"us_per_event", "thread_over_aiofiles", "kept"}),
    "ops": (dict(n=300, rounds=1), {"stamp_us", "timed_stamp_us", "timed_over_plain", "scrape_us"}),
    "pipeline": (dict(n=300, rounds=1), {"floor_signs_per_s", "pipeline_events_per_s", "pipeline_over_floor"}),
    "probes": (dict(leaves=20, rounds=1), {"probe_scan_ms", "plain_reads_ms", "ratio"}),
    "receiver": (dict(n=600, rounds=1), {"floor_signs_per_s", "receiver_only_events_per_s",
                                          "receiver_pipeline_events_per_s", "receiver_verify_events_per_s",
                                          "receiver_pipeline_over_floor", "receiver_verify_over_verify_floor"}),
    "taskstats": (dict(rounds=1, min_queries=300, pyroute2_queries=100), {"client_qps", "raw_qps", "pyroute2_qps",
                                                                          "ratio_vs_raw"}),
    "watch": (dict(changes=20, idle_seconds=0.5, rounds=1), {"latency_p50_ms", "latency_p99_ms",
                                                              "idle_agent_cpu_ms_per_s"}),
    "nats": (dict(events=300, rounds=1), {"sink_events_per_s", "floor_events_per_s", "ratio"}),
    "mounts": (dict(mounts=2, rounds=1), {"round_wall_ms", "round_cpu_ms", "in_process_floor_ms"}),
}

#: figures only a machine with two CPUs reports
TWO_CORES = {"raw_sign_two_processes_over_one", "two_cores_sign_threads_1_over_one",
             "two_cores_sign_threads_1_over_raw_scaling", "two_cores_sign_workers_2_over_one"}

_RUN = "import json, sys; from benchmarks import bench_{name} as m; print(json.dumps(m.run(**json.loads(sys.argv[1]))))"


def _numbers(value: Any) -> list[float]:
    """The numbers in a figure: itself, the values of a dict, or those of a "median (low–high)" string."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, str) and value[:1].isdigit() and "(" in value:
        median, spread = value.split(" (", 1)
        low, high = spread.rstrip(")").split("–")
        return [float(median), float(low), float(high)]
    return []


@pytest.mark.root
@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs_and_reports(name: str) -> None:
    kwargs, figures = CASES[name]
    proc = subprocess.run([sys.executable, "-c", _RUN.format(name=name), json.dumps(kwargs)], cwd=ROOT,
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    missing = figures - out.keys()
    assert not missing, f"bench_{name} no longer reports {sorted(missing)}"
    for key in figures:
        for x in _numbers(out[key]):
            assert math.isfinite(x) and x >= 0, (key, out[key])
    if name == "receiver":
        if len(os.sched_getaffinity(0)) > 1:
            from agent import _native

            # signing threads need the native signer (HOSTSTAMP_NATIVE=0 turns it off)
            want = TWO_CORES if _native.Signer is not None else {k for k in TWO_CORES if "threads" not in k}
            assert not want - out.keys(), sorted(want - out.keys())
            low, high = _numbers(out["raw_sign_two_processes_over_one"])[1:]
            assert 0 < low <= high
        assert out["cores"] == len(os.sched_getaffinity(0))
    if name == "archive":
        assert out["archive_verifies"] is True
