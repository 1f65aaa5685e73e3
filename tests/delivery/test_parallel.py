"""Guest events signed in worker processes: same events, same order, every signature valid."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson
import pytest

from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.parallel import ParallelPipeline
from agent.signing.event import verify_event
from agent.signing.keys import SigningKey, generate_keypair
from agent.sinks.memory import MemorySink
from tests.delivery.agents import Agent, Sender, guest_events, ids_in
from tests.helpers import run_cli


def guest(i: int, source: str) -> dict[str, object]:
    return {"specversion": "1.0", "id": f"g{i}", "source": source, "type": "t", "hostid": "forged",
            "data": {"i": i, "big": 2**60}}


@pytest.mark.anyio
async def test_parallel_signing_keeps_order_and_signatures() -> None:
    key = SigningKey.generate()
    q = SinkQueue(10000)
    stats = PipelineStats()
    sink = MemorySink()
    pipeline = ParallelPipeline(Stamper(key, "h", SequenceStore(None)), [q], stats, workers=2, batch_max=16)
    worker = SinkWorker(sink, q, stats.sink("m"), flush_interval=0.05)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            receipts = [await pipeline.submit_guest(guest(i, f"vm/{i % 3}"), "vsock:9") for i in range(300)]
            receipts.append(await pipeline.submit_guest({"specversion": "1.0", "id": "bad", "source": "vm/0",
                                                         "type": "t", "data": {"x": b"raw"}}, "vsock:9"))
            with anyio.fail_after(60):
                results = [await r.wait() for r in receipts]
            pipeline.close()
    finally:
        await pipeline.aclose()
    assert results == [True] * 300 + [False]  # the unstampable one is dropped, not lost silently
    docs = [orjson.loads(e.body) for e in sink.events]
    assert [d["id"] for d in docs] == [f"g{i}" for i in range(300)]
    for src in ("vm/0", "vm/1", "vm/2"):
        seqs = [int(d["sequence"]) for d in docs if d["source"] == src]
        assert seqs == list(range(1, 101))
    trusted = {key.keyid: key.verify_key()}
    for d in docs:
        assert verify_event(d, trusted)["hostid"] == "h" and d["hostpeer"] == "vsock:9"
    assert stats.signed == 300 and stats.rejected == 1


def test_an_agent_with_sign_workers_receives_and_verifies(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    out = tmp_path / "out.ndjson"
    agent = Agent(tmp_path, "a", f"""
[agent]
state_dir = "state"
sign_workers = 2
[[sinks]]
uri = "file:{out}"
[[listeners]]
uri = "unix:{tmp_path}/a.sock"
""", listen=tmp_path / "a.sock").start()
    try:
        rc, err = Sender(tmp_path, f"unix:{tmp_path}/a.sock", guest_events(range(1000)), timeout=30).finish()
        assert rc == 0, err
    finally:
        agent.stop()
    assert ids_in(out) == {f"ev-{i}" for i in range(1000)}
    seqs = [int(orjson.loads(line)["sequence"]) for line in out.read_bytes().splitlines()]
    assert seqs == list(range(1, 1001))
    check = run_cli(["verify", "--pub", str(tmp_path / "keys" / "host.pub"), str(out)], cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_one_event_that_cannot_be_stamped_does_not_take_its_batch_with_it() -> None:
    """The worker's side of a job, without the process: one bad event is refused, its neighbours are signed."""
    from agent.pipeline.signer import _job, decode_reply, encode_job

    key = SigningKey.generate()
    stamper = Stamper(key, "h", SequenceStore(None))
    impossible = {**guest(2, "vm/0"), "time": "2024-13-45T00:00:00Z"}  # RFC 3339 in form, no such date
    frames = [orjson.dumps(guest(1, "vm/0")), orjson.dumps(impossible), b"{not json", orjson.dumps(guest(3, "vm/0"))]
    job = encode_job(1.0, "vsock:9", [1, 2, 3, 4], frames)
    reply = _job(stamper, job[4:])
    done = decode_reply(reply[4:])
    assert [isinstance(d, str) for d in done] == [False, True, True, False]
    assert "2024-13-45" in str(done[1])
    docs = [orjson.loads(d) for d in done if isinstance(d, bytes)]
    assert [(d["id"], d["sequence"], d["hostreceivedat"]) for d in docs] == [
        ("g1", "1", "1970-01-01T00:00:01.000000Z"), ("g3", "4", "1970-01-01T00:00:01.000000Z")]
    for d in docs:
        verify_event(d, {key.keyid: key.verify_key()})


@pytest.mark.anyio
async def test_a_signing_worker_that_dies_is_replaced_and_no_event_is_lost() -> None:
    import os
    import signal

    key = SigningKey.generate()
    q = SinkQueue(1000)
    stats = PipelineStats()
    sink = MemorySink()
    pipeline = ParallelPipeline(Stamper(key, "h", SequenceStore(None)), [q], stats, workers=1)
    worker = SinkWorker(sink, q, stats.sink("m"), flush_interval=0.05)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(60):
                assert await pipeline.submit_guest(guest(0, "vm/0"), "vsock:9") and await pipeline.start() == 1
                for w in list(pipeline.signers.workers):
                    os.kill(w.proc.pid, signal.SIGKILL)  # as the OOM killer would
                receipts = [await pipeline.submit_guest(guest(i, "vm/0"), "vsock:9") for i in range(1, 4)]
                results = [await r.wait() for r in receipts]
            pipeline.close()
    finally:
        await pipeline.aclose()
    assert results == [True, True, True]
    assert [orjson.loads(e.body)["id"] for e in sink.events] == ["g0", "g1", "g2", "g3"]
    assert pipeline.started == 2  # the one killed and its replacement


@pytest.mark.anyio
async def test_closing_stops_every_worker_and_later_submits_fail_as_transient() -> None:
    from agent.errors import SinkError

    pipeline = ParallelPipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [SinkQueue(10)],
                                PipelineStats(), workers=2)
    with anyio.fail_after(60):
        assert await pipeline.start() == 2
        procs = [w.proc for w in pipeline.signers.workers]
        await pipeline.aclose()
    assert all(p.returncode is not None for p in procs)
    with pytest.raises(SinkError, match="closed"):
        await pipeline.submit_guests([guest(1, "vm/0")], "vsock:9")


async def _one_batch(events: list[dict[str, object]]) -> tuple[list[object], list[dict[str, object]],
                                                                 ParallelPipeline]:
    """``events`` through a pipeline with one signing worker into memory: the batch's answer, what the sink
    got, and the (closed) pipeline."""
    q = SinkQueue(100)
    stats = PipelineStats()
    sink = MemorySink()
    pipeline = ParallelPipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [q], stats, workers=1)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(SinkWorker(sink, q, stats.sink("m"), flush_interval=0.01).run)
            with anyio.fail_after(60):
                sub = await pipeline.submit_guests(events, "vsock:9")
                answer = await sub.future
            pipeline.close()
    finally:
        await pipeline.aclose()
    return answer, [orjson.loads(e.body) for e in sink.events], pipeline


@pytest.mark.anyio
async def test_an_event_of_a_date_that_does_not_exist_takes_no_sequence_number() -> None:
    events = [guest(0, "vm/0"), {**guest(1, "vm/0"), "time": "2024-02-30T00:00:00Z"}, guest(2, "vm/0")]
    answer, docs, _pipeline = await _one_batch(events)
    assert answer[0] is True and answer[2] is True and "2024-02-30" in str(answer[1])
    assert [(d["id"], d["sequence"]) for d in docs] == [("g0", "1"), ("g2", "2")]  # no gap where g1 was refused
