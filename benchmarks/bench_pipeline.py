"""Signed events per second through the whole pipeline on one core, against raw Ed25519 signing.

All on one CPU (the process is pinned to one core, writer thread included):

- ``floor``: raw signatures of a message the size of a DSSE PAE, in a loop, with what the agent signs with
  (the native libsodium signer when built, else ``Ed25519PrivateKey.sign``);
- ``pipeline``: readings -> ``Pipeline.submit`` (stamp, JCS, verifiability digest, DSSE
  signature, event JSON) -> bounded queue -> ``SinkWorker`` -> ``file:`` sink, until the last
  event is flushed to disk;
- ``naive``: what one would write with the official SDK: ``CloudEvent(...)`` -> ``JSONFormat().write``
  -> sign those bytes -> one ``aiofiles`` write per event.

Goal: ``pipeline / floor >= 0.80``. Readings are realistic cgroup readings (~20 integer counters).
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiofiles
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from agent.model import Reading
from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.router import Pipeline
from agent.signing.keys import SigningKey
from agent.sinks.base import SinkContext
from agent.sinks.file import FileOptions, FileSink
from benchmarks._common import one_core, sign_floor

N = 20000
ROUNDS = 3
GOAL = 0.80


def _readings(n: int) -> list[Reading]:
    out = []
    for i in range(n):
        out.append(
            Reading(
                probe="cgroup",
                subject=f"/system.slice/unit-{i % 200}.service",
                output={
                    "memory_events": {"low": 0, "high": 0, "max": 0, "oom": 0, "oom_kill": i % 3, "oom_group_kill": 0},
                    "cpu_stat": {"usage_usec": 123456789 + i, "user_usec": 1234567, "system_usec": 7654321,
                                 "nr_periods": 0, "nr_throttled": 0, "throttled_usec": 0},
                    "pids_events": {"max": 0},
                    "memory_current": 104857600 + i,
                },
                inputs=(f"/sys/fs/cgroup/system.slice/unit-{i % 200}.service/memory.events",),
                probe_source="cgroupfs",
            )
        )
    return out


#: the signing floor, shared with the other benchmarks
floor = sign_floor


async def _pipeline(key: SigningKey, readings: list[Reading], path: Path) -> float:
    stamper = Stamper(key, "3d1219c7c4c5404aaa1f6d2a48adfda4", SequenceStore(None))
    q = SinkQueue(10000)
    stats = PipelineStats()
    sink = FileSink(str(path), FileOptions(), SinkContext())
    worker = SinkWorker(sink, q, stats.sink("file"), batch_max=512)
    pipeline = Pipeline(stamper, [q], stats)
    t0 = time.perf_counter()
    task = asyncio.ensure_future(worker.run())
    for r in readings:
        await pipeline.submit(r)
    pipeline.close()
    await task
    dt = time.perf_counter() - t0
    assert stats.sink("file").sent == len(readings)
    return len(readings) / dt


async def _naive(key: SigningKey, readings: list[Reading], path: Path) -> float:
    fmt = JSONFormat()
    t0 = time.perf_counter()
    async with aiofiles.open(path, "ab") as f:
        for i, r in enumerate(readings):
            ce = CloudEvent(
                {"id": str(i), "source": "hoststamp://h/cgroup", "type": r.type, "specversion": "1.0",
                 "subject": r.subject, "time": datetime.fromtimestamp(r.time, UTC),
                 "datacontenttype": "application/json"},
                r.data(),
            )
            body = fmt.write(ce)
            sig = base64.b64encode(key.sign(body))
            await f.write(body[:-1] + b',"sig":"' + sig + b'"}\n')
        await f.flush()
        os.fsync(f.fileno())
    return len(readings) / (time.perf_counter() - t0)


def run(n: int = N, rounds: int = ROUNDS) -> dict[str, Any]:
    key = SigningKey.generate()
    readings = _readings(n)
    best = {"floor": 0.0, "pipeline": 0.0, "naive": 0.0}
    with one_core() as pinned, tempfile.TemporaryDirectory(prefix="hoststamp-bench-") as tmp:
        for i in range(rounds):
            best["floor"] = max(best["floor"], floor(key, n))
            best["pipeline"] = max(best["pipeline"], asyncio.run(_pipeline(key, readings, Path(tmp) / f"p{i}.ndjson")))
            best["naive"] = max(best["naive"], asyncio.run(_naive(key, readings[: n // 4], Path(tmp) / f"n{i}.ndjson")))
    return {
        "events": n,
        "pinned_to_one_core": pinned,
        "floor_signs_per_s": best["floor"],
        "pipeline_events_per_s": best["pipeline"],
        "naive_events_per_s": best["naive"],
        "pipeline_over_floor": best["pipeline"] / best["floor"],
        "naive_over_floor": best["naive"] / best["floor"],
        "goal_pipeline_over_floor": f">= {GOAL}",
        "goal_met": best["pipeline"] / best["floor"] >= GOAL,
    }


def main() -> None:
    for k, v in run().items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
