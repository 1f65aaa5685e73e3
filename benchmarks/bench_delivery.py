"""Delivery: what the disk spool costs, and memory while a sink is down.

Probe readings -> pipeline -> ``file:`` sink, each figure the best of a few rounds:

- ``spool_over_memory_queue``: through a disk spool (``spool_fsync = "batch"``) ÷ the same through the
  in-memory queue (no goal; the spool's price);
- ``memory_growth_mb`` (only with ``HOSTSTAMP_BENCH_SLOW=1``): resident memory growth while the sink is
  down for ``HOSTSTAMP_BENCH_DOWN_S`` (default 60) seconds under steady load, the backlog going to the
  spool (goal <= 20 MB).

Guest events through the receiver (one core, two cores, with guest signatures) are measured by
``bench_receiver.py``.

Run: ``python -m benchmarks delivery`` or ``python benchmarks/bench_delivery.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from agent.model import Reading
from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.router import Pipeline
from agent.signing.keys import SigningKey
from agent.sinks.base import SinkContext
from agent.sinks.file import FileOptions, FileSink

N = 20000
ROUNDS = 3
GOAL_MEMORY_MB = 20.0


def _data(i: int) -> dict[str, Any]:
    return {"probeSource": "guest", "inputs": ["/proc/pressure/cpu"],
            "output": {"some_avg10": 0.12, "some_avg60": 0.08, "some_total": 123456789 + i, "full_avg10": 0.0,
                       "full_total": 4567 + i, "task": f"worker-{i % 64}", "pid": 4000 + i % 512}}


# --- the spool's cost: the same readings through a memory queue and through a spool -----------------


async def _through_queue(key: SigningKey, readings: list[Reading], tmp: Path, spool: bool) -> float:
    from agent.pipeline.spool import Spool
    from agent.pipeline.spoolqueue import SpoolQueue

    stats = PipelineStats()
    q = SpoolQueue(Spool(tmp / "spool", fsync="batch"), "block") if spool else SinkQueue(10000)
    sink = FileSink(str(tmp / "out.ndjson"), FileOptions(), SinkContext())
    worker = SinkWorker(sink, q, stats.sink("file"), batch_max=512)
    pipeline = Pipeline(Stamper(key, "h", SequenceStore(None)), [q], stats)
    t0 = time.perf_counter()
    task = asyncio.ensure_future(worker.run())
    for r in readings:
        await pipeline.submit(r)
    pipeline.close()
    await task
    dt = time.perf_counter() - t0
    if isinstance(q, SpoolQueue):
        await q.aclose()
    return len(readings) / dt


# --- memory while a sink is down (slow; opt-in) -------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory_while_down(seconds: float, rate: float = 5000.0) -> dict[str, Any]:
    """Unix sink to nobody, spool on, ``rate`` readings/s for ``seconds``: RSS growth after warm-up."""
    from agent.pipeline.spool import Spool
    from agent.pipeline.spoolqueue import SpoolQueue
    from agent.sinks.socket import SocketOptions, UnixSink

    async def go(tmp: Path) -> dict[str, Any]:
        key = SigningKey.generate()
        stats = PipelineStats()
        spool = Spool(tmp / "spool", max_bytes=4 << 30, fsync="batch")
        q = SpoolQueue(spool, "block")
        sink = UnixSink(str(tmp / "nobody.sock"), SocketOptions(max_unacked=1000, send_timeout=1.0,
                                                                 backoff_max=1.0), SinkContext())
        worker = SinkWorker(sink, q, stats.sink("unix"), batch_max=512)
        pipeline = Pipeline(Stamper(key, "h", SequenceStore(None)), [q], stats)
        wtask = asyncio.ensure_future(worker.run())
        readings = [Reading(probe="cgroup", subject=f"/s/{i}.service", output=_data(i)["output"]) for i in range(500)]
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - t0 < seconds:
            while sent < (now - t0) * rate:
                await pipeline.submit(readings[sent % 500])
                sent += 1
            samples.append((now - t0, _rss_mb()))
            await asyncio.sleep(0.05)
        wtask.cancel()
        await asyncio.gather(wtask, return_exceptions=True)
        await sink.sender.aclose()  # drops what it holds: the sink never came back
        q.close()
        await q.aclose()
        warm = [m for t, m in samples if t >= min(5.0, seconds / 4)]
        return {"seconds": seconds, "events": sent, "spooled_mb": round(spool.bytes / 1e6, 1),
                "rss_start_mb": round(warm[0], 1), "rss_end_mb": round(warm[-1], 1),
                "memory_growth_mb": round(max(warm) - warm[0], 1)}

    with tempfile.TemporaryDirectory(prefix="hoststamp-bench-") as tmp:
        return asyncio.run(go(Path(tmp)))


# --- the whole run ------------------------------------------------------------------------------------


def run(n: int = N, rounds: int = ROUNDS) -> dict[str, Any]:
    key = SigningKey.generate()
    best = dict.fromkeys(("memq", "spoolq"), 0.0)
    readings = [Reading(probe="cgroup", subject=f"/s/{i % 200}.service", output=_data(i)["output"])
                for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="hoststamp-bench-") as tmp:
        for i in range(rounds):
            d = Path(tmp) / str(i)
            d.mkdir()
            for name, spooled in (("memq", False), ("spoolq", True)):
                (d / name).mkdir()
                best[name] = max(best[name], asyncio.run(_through_queue(key, readings, d / name, spooled)))
    out: dict[str, Any] = {
        "events": n,
        "readings_memory_queue_per_s": best["memq"],
        "readings_spool_batch_per_s": best["spoolq"],
        "spool_over_memory_queue": best["spoolq"] / best["memq"],
    }
    if os.environ.get("HOSTSTAMP_BENCH_SLOW"):
        mem = memory_while_down(float(os.environ.get("HOSTSTAMP_BENCH_DOWN_S", "60")))
        out["sink_down"] = mem
        out["goal_memory_growth_mb"] = f"<= {GOAL_MEMORY_MB}"
    return out


def main() -> None:
    for k, v in run().items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
