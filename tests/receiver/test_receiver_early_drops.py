"""A frame the host drops (a queue's overflow policy) is refused to its sender at once, while the frames before it
in the same batch still wait for a sink: docs/protocol.md, "a refusal may come before the cumulative ack"."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import _native
from agent.codec.framing import LengthPrefixedDecoder, encode_frame
from agent.config import ListenerOptions
from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, Stamper
from agent.pipeline.parallel import build_pipeline
from agent.receiver import PipelineDeliver, Receiver
from agent.signing.keys import SigningKey
from agent.transport import Ack, connect, decode_ack


def ev(i: int, **over: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"id-{i}", "source": "guest://vm/app", "type": "io.example.v1",
            "data": {"i": i}, **over}


async def _refusals_while_the_sink_is_away(tmp_path: Path, overflow: str, workers: int, threads: int,
                                           frames: list[dict[str, Any]], want: int,
                                           count: int = 0) -> tuple[list[Ack], int]:
    """Send ``frames`` in one write to a receiver whose only sink never takes anything; read acks until ``want``
    refusals came, and an ack ``count`` (frames settled). Returns the acks and the events left in the queue."""
    queue = SinkQueue(10, overflow)  # type: ignore[arg-type]
    stats = PipelineStats()
    pipeline = build_pipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [queue], stats, workers,
                              threads)
    await pipeline.start()
    deliver = PipelineDeliver(pipeline)
    path = tmp_path / "rx.sock"
    rx = Receiver.build(ListenerOptions(uri=f"unix:{path}"), deliver)
    serving = asyncio.ensure_future(rx.serve())
    acks: list[Ack] = []
    try:
        while not path.exists():
            await asyncio.sleep(0.005)
        stream = await connect(f"unix:{path}")
        await stream.send(b"".join(encode_frame(orjson.dumps(f)) for f in frames))
        dec = LengthPrefixedDecoder()
        async with asyncio.timeout(15):
            while sum(len(a.rejected) for a in acks) < want or max((a.count for a in acks), default=0) < count:
                chunk = await stream.receive()
                assert chunk, f"closed with acks {acks}"
                dec.feed(chunk)
                acks.extend(decode_ack(f) for f in dec.frames())
        await stream.aclose()
        return acks, len(queue)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        queue.close()
        await deliver.aclose()
        await pipeline.aclose(0.1)
        pipeline.close()


PIPELINES = [pytest.param(0, 0, id="loop"), pytest.param(2, 0, id="workers")]
if _native.Signer is not None:
    PIPELINES.append(pytest.param(0, 1, id="threads"))


@pytest.mark.parametrize(("workers", "threads"), PIPELINES)
@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
def test_dropped_frames_are_refused_while_the_rest_waits(tmp_path: Path, overflow: str, workers: int,
                                                         threads: int) -> None:
    frames = [ev(i) for i in range(1, 101)]
    settled = 0 if overflow == "drop_newest" else 90
    acks, queued = asyncio.run(_refusals_while_the_sink_is_away(tmp_path, overflow, workers, threads, frames, 90,
                                                                settled))
    refused = sorted(n for a in acks for n, _r in a.rejected)
    assert queued == 10
    # drop_newest keeps the first ten, drop_oldest the last ten
    assert refused == (list(range(11, 101)) if overflow == "drop_newest" else list(range(1, 91)))
    assert all(r.startswith("dropped:") for a in acks for _n, r in a.rejected)
    # the kept ten wait for the sink; the refused frames before the first of them are settled, and counted
    assert max(a.count for a in acks) == settled
    for i, a in enumerate(acks):  # each frame a count covers was refused in that ack or before, or was kept
        told = {n for b in acks[: i + 1] for n, _r in b.rejected}
        assert all(n in told for n in range(1, a.count + 1) if n in refused)


@pytest.mark.parametrize(("workers", "threads"), PIPELINES)
def test_an_event_the_host_cannot_stamp_is_refused_at_once_too(tmp_path: Path, workers: int, threads: int) -> None:
    frames = [ev(1), ev(2, time="2023-02-29T00:00:00Z"), ev(3)]
    acks, _queued = asyncio.run(_refusals_while_the_sink_is_away(tmp_path, "block", workers, threads, frames, 1))
    assert [(n, r.split(":")[0]) for a in acks for n, r in a.rejected] == [(2, "attributes")]
    assert max(a.count for a in acks) == 0


@pytest.mark.parametrize(("workers", "threads"), PIPELINES)
def test_events_safe_in_a_spool_are_acked_while_the_rest_of_their_read_waits_for_room(
        tmp_path: Path, workers: int, threads: int) -> None:
    """One write of 300 frames; the sink is away and its spool (block) holds only some of them. Those are durable:
    their frames are acked, while the rest of the same read waits for room, neither acked nor refused."""
    from agent.pipeline.spool import Spool
    from agent.pipeline.spoolqueue import SpoolQueue

    async def main() -> tuple[list[Ack], int]:
        queue = SpoolQueue(Spool(tmp_path / "spool", max_bytes=16384), "block")
        pipeline = build_pipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [queue],
                                  PipelineStats(), workers, threads)
        await pipeline.start()
        deliver = PipelineDeliver(pipeline)
        path = tmp_path / "rx.sock"
        serving = asyncio.ensure_future(Receiver.build(ListenerOptions(uri=f"unix:{path}"), deliver).serve())
        acks: list[Ack] = []
        try:
            while not path.exists():
                await asyncio.sleep(0.005)
            stream = await connect(f"unix:{path}")
            await stream.send(b"".join(encode_frame(orjson.dumps(ev(i))) for i in range(1, 301)))
            dec = LengthPrefixedDecoder()
            async with asyncio.timeout(15):
                while not acks or acks[-1].count == 0:
                    chunk = await stream.receive()
                    assert chunk, f"closed with acks {acks}"
                    dec.feed(chunk)
                    acks.extend(decode_ack(f) for f in dec.frames())
            await stream.aclose()
            return acks, queue.enqueued
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            await deliver.aclose()
            await pipeline.aclose(0.1)
            pipeline.close()
            queue.close()
            await queue.aclose()

    acks, spooled = asyncio.run(main())
    assert 0 < acks[-1].count <= spooled < 300  # acked: only what the spool holds
    assert not any(a.rejected for a in acks)
