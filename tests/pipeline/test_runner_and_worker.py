"""Probe runner and sink worker, with fakes shipped in the package (no patching)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import orjson
import pytest

from agent.config import ProbeConfig
from agent.errors import ProbeError
from agent.model import Event, Reading
from agent.pipeline import Pipeline, ProbeRunner, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.stats import PipelineStats, SinkStats
from agent.probes.base import Probe, ProbeContext
from agent.signing.keys import SigningKey
from agent.sinks.memory import MemorySink


class Good(Probe):
    name = "good"

    async def collect(self) -> Sequence[Reading]:
        return [Reading(probe=self.name, subject="x", output={"n": 1})]


class Broken(Probe):
    name = "broken"

    async def collect(self) -> Sequence[Reading]:
        raise ProbeError("cannot read /nowhere")


class Crashing(Probe):
    name = "crashing"

    async def collect(self) -> Sequence[Reading]:
        raise ZeroDivisionError("bug")


class Hanging(Probe):
    name = "hanging"

    async def collect(self) -> Sequence[Reading]:
        await anyio.sleep(3600)
        return []


def pc(name: str, timeout: float = 1.0, interval: float = 0.05) -> ProbeConfig:
    return ProbeConfig(name=name, enabled=True, interval=interval, timeout=timeout, jitter=0.0, options=None)


def make_pipeline(*sinks: MemorySink, size: int = 100) -> tuple[Pipeline, list[SinkWorker]]:
    stamper = Stamper(SigningKey.generate(), "h", SequenceStore(None))
    queues = [SinkQueue(size) for _ in sinks]
    stats = PipelineStats()
    workers = [
        SinkWorker(s, q, stats.sink(str(i)), flush_interval=0.05)
        for i, (s, q) in enumerate(zip(sinks, queues, strict=False))
    ]
    return Pipeline(stamper, queues, stats), workers


@pytest.mark.anyio
@pytest.mark.parametrize(("cls", "needle"), [(Broken, "cannot read"), (Crashing, "bug"), (Hanging, "timed out")])
async def test_failures_become_error_readings(cls: type[Probe], needle: str) -> None:
    probe = cls(None, ProbeContext())
    stats = PipelineStats()
    runner = ProbeRunner(probe, pc(cls.name, timeout=0.2), _discard, stats.probe(cls.name))
    (reading,) = await runner.collect_once()
    assert reading.error is not None and needle in reading.error and reading.output == {}
    assert stats.probe(cls.name).failures == 1 and not stats.probe(cls.name).last_success


async def _discard(_readings: Sequence[Reading]) -> None:
    return None


@pytest.mark.anyio
async def test_a_failing_probe_does_not_stop_the_others() -> None:
    sink = MemorySink()
    pipeline, workers = make_pipeline(sink)
    stats = PipelineStats()
    runners = [
        ProbeRunner(cls(None, ProbeContext()), pc(cls.name, timeout=0.1), pipeline.submit_many, stats.probe(cls.name))
        for cls in (Good, Broken, Hanging)
    ]

    def count(kind: str) -> int:
        return sum(orjson.loads(e.body)["type"] == f"io.hoststamp.host.v1.{kind}" for e in sink.events)

    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.run)
        async with anyio.create_task_group() as probes:
            for r in runners:
                probes.start_soon(r.run)
            # rounds every 0.05 s: the good probe goes on beside one that fails and one that hangs
            with anyio.fail_after(20):
                while count("good") < 5 or count("broken") < 5 or count("hanging") < 2:
                    await anyio.sleep(0.02)
            probes.cancel_scope.cancel()
        pipeline.close()
    types = [orjson.loads(e.body)["type"] for e in sink.events]
    assert types.count("io.hoststamp.host.v1.good") >= 5
    assert types.count("io.hoststamp.host.v1.broken") >= 5
    assert types.count("io.hoststamp.host.v1.hanging") >= 2
    errors = [orjson.loads(e.body)["data"].get("error") for e in sink.events]
    assert any(e and "timed out" in e for e in errors)


@pytest.mark.anyio
async def test_worker_retries_a_down_sink_and_loses_nothing() -> None:
    sink = MemorySink()
    sink.fail_opens = 2
    sink.fail_sends = 3
    pipeline, workers = make_pipeline(sink, size=1000)
    async with anyio.create_task_group() as tg:
        tg.start_soon(workers[0].run)
        for i in range(300):
            await pipeline.submit(Reading(probe="p", subject=str(i), output={"i": i}))
        pipeline.close()
    assert [e.sequence for e in sink.events] == list(range(1, 301))
    assert sink.closed and workers[0].finished


@pytest.mark.anyio
async def test_guest_receipt_completes_after_every_sink_flushed() -> None:
    a, b = MemorySink(), MemorySink()
    pipeline, workers = make_pipeline(a, b)
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.run)
        guest = {
            "specversion": "1.0",
            "id": "g1",
            "source": "guest/x",
            "type": "t",
            "hostid": "forged",
            "sequence": "999999",
            "data": {"v": 1},
        }
        receipt = await pipeline.submit_guest(guest, "vsock:7")
        with anyio.fail_after(5):
            assert await receipt.wait() is True
        assert a.flushes >= 1 and b.flushes >= 1
        pipeline.close()
    doc = orjson.loads(a.events[0].body)
    assert doc["hostid"] == "h" and doc["sequence"] == "1" and doc["hostpeer"] == "vsock:7"


def test_sink_stats_default() -> None:
    assert SinkStats().healthy


@pytest.mark.anyio
async def test_a_worker_counts_the_batch_it_holds_while_the_sink_is_down() -> None:
    sink = MemorySink()
    sink.fail_sends = 10**9
    pipeline, workers = make_pipeline(sink)
    async with anyio.create_task_group() as tg:
        tg.start_soon(workers[0].run)
        for i in range(3):
            await pipeline.submit(Reading(probe="p", subject=str(i), output={"i": i}))
        with anyio.fail_after(5):
            while workers[0].holding == 0:
                await anyio.sleep(0.01)
        # the batch left the queue, so only the worker can say it is not delivered
        assert len(pipeline.queues[0]) + workers[0].holding == 3
        sink.fail_sends = 0
        with anyio.fail_after(5):
            while workers[0].holding:
                await anyio.sleep(0.01)
        pipeline.close()
    assert len(sink.events) == 3


class NeverConfirms(MemorySink):
    unacked = 2

    async def flush(self) -> None:
        await anyio.sleep(3600)


@pytest.mark.anyio
async def test_a_sink_that_never_confirms_at_close_is_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agent.pipeline import worker as worker_mod

    monkeypatch.setattr(worker_mod, "CLOSE_TIMEOUT", 0.1)
    sink = NeverConfirms()
    _pipeline, workers = make_pipeline(sink)
    workers[0].queue.close()
    with anyio.fail_after(5):
        await workers[0].run()
    assert workers[0].finished
    assert "not confirmed within 0.1s of closing; 2 events may be lost" in caplog.text


@pytest.mark.anyio
async def test_the_last_attempt_to_close_ends_with_the_drain_deadline(caplog: pytest.LogCaptureFixture) -> None:
    """A drain whose deadline has passed leaves a sink a last moment to close, not the whole close timeout on
    top of the deadline."""
    from agent.pipeline import worker as worker_mod

    await _closed_past_the_deadline(NeverConfirms())
    assert f"not confirmed within {worker_mod.CLOSE_LAST_MOMENT:g}s of closing; 2 events may be lost" in caplog.text


class RunsSomething(NeverConfirms):
    """A sink with work of its own (a socket sink's sender) that only its close, or an abort, stops."""

    aborted = False

    def abort(self) -> None:
        self.aborted = True


@pytest.mark.anyio
async def test_a_close_cut_short_aborts_what_the_sink_runs() -> None:
    """The flush was cut short before the sink's own close was reached: without the abort, a reload or a
    shutdown left the sink's sender reconnecting for ever beside the next generation's."""
    sink = RunsSomething()
    await _closed_past_the_deadline(sink)
    assert sink.aborted


async def _closed_past_the_deadline(sink: MemorySink) -> None:
    """Run a worker of ``sink`` with nothing to send, closing when the drain's deadline has passed already."""
    import time

    _pipeline, workers = make_pipeline(sink)
    workers[0].close_by = time.monotonic() - 1.0
    workers[0].queue.close()
    with anyio.fail_after(5):
        await workers[0].run()
    assert workers[0].finished


class Buggy(MemorySink):
    """Its first ``n`` sends raise something other than SinkError, as a bug in a sink would."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    async def send(self, batch: Sequence[Event]) -> None:
        if self.n > 0:
            self.n -= 1
            raise KeyError("hostid")
        await super().send(batch)


@pytest.mark.anyio
async def test_a_sink_that_raises_anything_is_retried_and_the_other_sink_is_not_held_up() -> None:
    buggy, good = Buggy(3), MemorySink()
    pipeline, workers = make_pipeline(buggy, good, size=1000)
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.run)
        for i in range(100):
            await pipeline.submit(Reading(probe="p", subject=str(i), output={"i": i}))
        pipeline.close()
    assert [e.sequence for e in buggy.events] == [e.sequence for e in good.events] == list(range(1, 101))
    bad = pipeline.stats.sink("0")
    assert bad.send_errors == 3 and bad.last_error == "send failed: KeyError: 'hostid'" and bad.healthy
    assert pipeline.stats.sink("1").send_errors == 0
    assert all(w.finished for w in workers) and buggy.closed and good.closed
