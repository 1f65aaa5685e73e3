"""The file sink's two writers, per event, with 512-event batches: a writer thread against aiofiles.

Both write the same 20,000 ~1.2 kB lines in 512-line batches and fsync at the end, on one core.
``aiofiles_per_line`` is the same data with one ``await f.write(line)`` per event, the pattern the
batching exists to avoid. Figures are microseconds per event (lower is better); the ratio
``thread / aiofiles`` < 1 means the thread writer is faster.
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

import aiofiles

from agent.model import Event
from agent.sinks.base import SinkContext
from agent.sinks.file import FileOptions, FileSink
from benchmarks._common import one_core

N = 20000
BATCH = 512


def _events(n: int) -> list[Event]:
    body = b'{"x":"' + b"a" * 1150 + b'"}'
    return [Event(id=str(i), source="s", type="t", sequence=i, body=body) for i in range(n)]


async def _sink(writer: str, path: Path, evs: list[Event]) -> float:
    sink = FileSink(str(path), FileOptions(writer=writer), SinkContext())  # type: ignore[arg-type]
    await sink.open()
    t0 = time.perf_counter()
    for i in range(0, len(evs), BATCH):
        await sink.send(evs[i : i + BATCH])
    await sink.aclose()
    return (time.perf_counter() - t0) / len(evs) * 1e6


async def _per_line(path: Path, evs: list[Event]) -> float:
    t0 = time.perf_counter()
    async with aiofiles.open(path, "ab") as f:
        for e in evs:
            await f.write(e.body + b"\n")
        await f.flush()
        os.fsync(f.fileno())
    return (time.perf_counter() - t0) / len(evs) * 1e6


def run(n: int = N, rounds: int = 3) -> dict[str, Any]:
    evs = _events(n)
    best = {"thread": float("inf"), "aiofiles": float("inf"), "aiofiles_per_line": float("inf")}
    with one_core(), tempfile.TemporaryDirectory(prefix="hoststamp-bench-") as tmp:
        for r in range(rounds):
            for w in ("thread", "aiofiles"):
                best[w] = min(best[w], asyncio.run(_sink(w, Path(tmp) / f"{w}{r}", evs)))
            best["aiofiles_per_line"] = min(
                best["aiofiles_per_line"], asyncio.run(_per_line(Path(tmp) / f"l{r}", evs[: n // 4]))
            )
    return {
        "us_per_event": best,
        "thread_over_aiofiles": best["thread"] / best["aiofiles"],
        "kept": "thread" if best["thread"] <= best["aiofiles"] else "aiofiles",
    }


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
