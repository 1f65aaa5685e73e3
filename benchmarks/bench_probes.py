"""One ``cgroup`` probe scan of 1,000 leaves against a plain loop reading the same files.

Both run in the same process on the same generated tree of real files
(:func:`agent.hostfs.synth.write_cgroup_tree`). The probe's scan walks the
tree, reads every file, parses it, computes deltas and builds one reading per
leaf, all behind one worker-thread hop; the floor only opens and reads each
file. ``ratio`` = floor time / probe time (best of several rounds each,
interleaved); the goal is ``ratio >= 0.5``, i.e. the whole scan costs at most
twice the bare reads.

Run: ``python -m benchmarks.bench_probes`` (from the project root).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.hostfs.cgroupfs import LEAF_FILES
from agent.hostfs.synth import write_cgroup_tree
from agent.probes.cgroup import CgroupOptions, CgroupProbe

LEAVES = 1000
ROUNDS = 7
GOAL = 0.5


def _plain(files: list[str]) -> int:
    total = 0
    for path in files:
        with open(path, "rb") as f:
            total += len(f.read())
    return total


def run(leaves: int = LEAVES, rounds: int = ROUNDS) -> dict[str, Any]:
    """Measure; returns the figures (seconds are best-of-``rounds``)."""
    # tmpfs when there is one: cgroupfs lives in memory too, and 8,000 files are slow to create on disk
    where = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="hoststamp-bench-", dir=where) as tmp:
        root = Path(tmp) / "cgroup"
        rels = write_cgroup_tree(root, leaves=leaves)
        files = [f"{root}{rel}/{name}" for rel in rels for name in LEAF_FILES]
        probe = CgroupProbe(CgroupOptions(root=str(root)))

        async def measure() -> tuple[float, float, int]:
            probe_best = plain_best = float("inf")
            readings = 0
            _plain(files)
            await probe.collect()  # warm both: page cache, imports, the worker thread
            for _ in range(rounds):
                t0 = time.perf_counter()
                got = await probe.collect()
                probe_best = min(probe_best, time.perf_counter() - t0)
                readings = len(got)
                t0 = time.perf_counter()
                _plain(files)
                plain_best = min(plain_best, time.perf_counter() - t0)
            return probe_best, plain_best, readings

        probe_s, plain_s, readings = asyncio.run(measure())
    ratio = plain_s / probe_s
    return {
        "name": "cgroup scan vs plain reads",
        "leaves": leaves,
        "files": leaves * len(LEAF_FILES),
        "readings": readings,
        "probe_scan_ms": round(probe_s * 1e3, 2),
        "plain_reads_ms": round(plain_s * 1e3, 2),
        "per_leaf_us": round(probe_s / leaves * 1e6, 1),
        "ratio": round(ratio, 3),
        "goal": f">= {GOAL}",
        "ok": ratio >= GOAL,
    }


def main() -> int:
    r = run()
    print(f"cgroup probe, {r['leaves']} leaves ({r['files']} files): scan {r['probe_scan_ms']} ms "
          f"({r['per_leaf_us']} us/leaf), plain reads {r['plain_reads_ms']} ms, "
          f"ratio {r['ratio']} (goal {r['goal']}): {'ok' if r['ok'] else 'BELOW GOAL'}")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
