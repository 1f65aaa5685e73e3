"""What one ``mounts`` round costs: CPU of the agent and of its checker children.

A generated mount table lists ``MOUNTS`` nfs4 mounts whose targets are real
directories (so every check answers); container scanning runs on this host's
real ``/proc``; ``cache_ttl = 0`` so every mount is checked every round. The
floor is ``os.stat`` + ``os.statvfs`` of the same paths in this process (what
an unsafe probe would do). Reported: wall time and CPU per steady round (this
process plus the workers, from ``/proc/PID/stat``), the first round's cost
(starting the workers), ``ratio`` = floor / probe wall time, and the share of
one core the probe would use at a 10 s interval (the issue's overhead goal is
0.3 % for all probes together).

Run: ``python -m benchmarks.bench_mounts`` (from the project root).
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.probes.mounts import MountsOptions, MountsProbe

MOUNTS = 20
ROUNDS = 20
INTERVAL = 10.0
TICK = os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _proc_cpu(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _floor(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        os.stat(p)
        os.statvfs(p)
    return time.perf_counter() - t0


def run(mounts: int = MOUNTS, rounds: int = ROUNDS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hoststamp-bench-mounts-") as tmp:
        root = Path(tmp)
        lines = []
        for i in range(mounts):
            (root / f"m{i}").mkdir()
            lines.append(f"10.0.0.{i}:/export/{i} {root}/m{i} nfs4 rw,relatime,vers=4.2,hard 0 0")
        table = root / "mounts"
        table.write_text("\n".join(lines) + "\n")
        paths = [str(root / f"m{i}") for i in range(mounts)]
        probe = MountsProbe(MountsOptions(proc_mounts=str(table), cache_ttl=0.0, containers=True))

        def workers() -> list[int]:
            return [w.pid for w in probe.checker._idle]

        async def measure() -> dict[str, Any]:
            c0, t0 = _self_cpu(), time.perf_counter()
            first = await probe.collect()
            cold_wall = time.perf_counter() - t0
            pids = workers()
            cold_cpu = _self_cpu() - c0 + sum(_proc_cpu(p) for p in pids)
            best = float("inf")
            c0, w0 = _self_cpu(), sum(_proc_cpu(p) for p in pids)
            for _ in range(rounds):
                t0 = time.perf_counter()
                await probe.collect()
                best = min(best, time.perf_counter() - t0)
            cpu = (_self_cpu() - c0 + sum(_proc_cpu(p) for p in workers()) - w0) / rounds
            await probe.aclose()
            return {"first": first, "cold_wall": cold_wall, "cold_cpu": cold_cpu, "wall": best, "cpu": cpu,
                    "workers": len(pids)}

        m = asyncio.run(measure())
        floor = min(_floor(paths) for _ in range(rounds))
    summary = m["first"][-1].output
    share = m["cpu"] / INTERVAL * 100
    return {
        "name": "mounts round: checks in child processes vs in-process stat",
        "mounts": mounts,
        "containers_scanned": summary["containers"],
        "workers": m["workers"],
        "first_round_wall_ms": round(m["cold_wall"] * 1e3, 2),
        "first_round_cpu_ms": round(m["cold_cpu"] * 1e3, 2),
        "round_wall_ms": round(m["wall"] * 1e3, 2),
        "round_cpu_ms": round(m["cpu"] * 1e3, 2),
        "per_mount_cpu_us": round(m["cpu"] / mounts * 1e6, 1),
        "in_process_floor_ms": round(floor * 1e3, 3),
        "ratio": round(floor / m["wall"], 4),
        "core_share_at_10s_pct": round(share, 4),
    }


def main() -> int:
    r = run()
    print(f"mounts probe, {r['mounts']} mounts, {r['containers_scanned']} containers: round {r['round_wall_ms']} ms "
          f"wall, {r['round_cpu_ms']} ms CPU ({r['per_mount_cpu_us']} us/mount); first round {r['first_round_cpu_ms']}"
          f" ms CPU; in-process floor {r['in_process_floor_ms']} ms (ratio {r['ratio']}); "
          f"{r['core_share_at_10s_pct']} % of a core at a 10 s interval")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
