"""Shared by the NATS tests: a pipeline with sinks, bounded waits, reading a stream back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nats
from nats.js.api import RawStreamMsg

from agent.model import Reading
from agent.pipeline import Pipeline, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.stats import PipelineStats
from agent.signing.keys import SigningKey
from agent.sinks.base import Sink


@dataclass
class Rig:
    """A pipeline whose sink workers run as tasks; ``stop()`` drains them, bounded."""

    sinks: list[Sink]
    key: SigningKey = field(default_factory=SigningKey.generate)
    host: str = "host.example"

    def __post_init__(self) -> None:
        self.stats = PipelineStats()
        self.queues = [SinkQueue(100_000) for _ in self.sinks]
        self.workers = [SinkWorker(s, q, self.stats.sink(s.uri), batch_max=128, flush_interval=0.05)
                        for s, q in zip(self.sinks, self.queues, strict=True)]
        self.pipeline = Pipeline(Stamper(self.key, self.host, SequenceStore(None)), self.queues, self.stats)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.ensure_future(w.run()) for w in self.workers]

    async def stop(self, timeout: float = 20.0) -> None:
        self.pipeline.close()
        try:
            await asyncio.wait_for(asyncio.gather(*self.tasks), timeout)
        finally:
            for t in self.tasks:
                t.cancel()


def reading(i: int) -> Reading:
    return Reading(probe="cgroup", subject=f"/sys/fs/cgroup/s{i % 7}.slice", output={"i": i, "bytes": i * 4096},
                   inputs=("memory.current",), probe_source="/sys/fs/cgroup")


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def stream_messages(url: str, stream: str, timeout: float = 20.0) -> list[RawStreamMsg]:
    """Every message of ``stream``, by sequence number."""
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream()
        info = await asyncio.wait_for(js.stream_info(stream), timeout)
        first, last = info.state.first_seq, info.state.last_seq
        return [await asyncio.wait_for(js.get_msg(stream, seq), timeout) for seq in range(first, last + 1)
                if info.state.messages]
    finally:
        await nc.close()
