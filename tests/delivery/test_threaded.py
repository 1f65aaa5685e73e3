"""Guest events signed in threads beside the loop: the same bytes, the same order, failures kept to their batch."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from agent import _native
from agent.errors import SinkError
from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.parallel import build_pipeline
from agent.pipeline.router import Pipeline
from agent.pipeline.stamp import _ENV_TAIL, _PAE_HEAD
from agent.pipeline.threaded import SIGN_NICE, ThreadedPipeline
from agent.signing.event import verify_event
from agent.signing.keys import SigningKey, generate_keypair
from agent.sinks.memory import MemorySink
from tests.delivery.agents import Agent, Sender, guest_events, ids_in
from tests.helpers import run_cli

native = pytest.mark.skipif(_native.Signer is None, reason="the native signer is not built here")


def guest(i: int, source: str, **extra: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"g{i}", "source": source, "type": "t", "hostid": "forged",
            "data": {"i": i}, **extra}


def batches() -> list[list[dict[str, Any]]]:
    """60 batches from three sources, with an unstampable event (an impossible date) and a generic-path one."""
    out = []
    for b in range(60):
        batch = [guest(b * 10 + j, f"vm/{j % 3}") for j in range(10)]
        if b % 7 == 3:
            batch[4]["time"] = "2024-13-45T00:00:00Z"
        if b % 5 == 1:
            batch[2]["data"] = "text data takes the generic path"
        out.append(batch)
    return out


async def _run(pipeline: Pipeline, key: SigningKey) -> tuple[list[bytes], list[Any]]:
    sink = MemorySink()
    q = pipeline.queues[0]
    worker = SinkWorker(sink, q, pipeline.stats.sink("m"), flush_interval=0.01)
    answers = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await pipeline.start()
        with anyio.fail_after(60):
            pending = [await pipeline.submit_guests(b, "vsock:9") for b in batches()]
            # exceptions compare by identity: keep what they say
            answers = [None if a is None else [x if isinstance(x, bool) else repr(x) for x in a]
                       for a in [await p.future for p in pending]]
            await pipeline.aclose()
        pipeline.close()
    return [e.body for e in sink.events], answers


@native
@pytest.mark.anyio
@pytest.mark.parametrize("threads", [1, 3])
async def test_threads_make_the_same_events_in_the_same_order_as_the_loop(threads: int) -> None:
    key = SigningKey.generate()

    def stamper() -> Stamper:
        return Stamper(key, "h", SequenceStore(None), clock=lambda: 1_700_000_000.5)

    plain = Pipeline(stamper(), [SinkQueue(10000)], PipelineStats())
    threaded = ThreadedPipeline(stamper(), [SinkQueue(10000)], PipelineStats(), threads=threads)
    expected, expected_answers = await _run(plain, key)
    bodies, answers = await _run(threaded, key)
    assert bodies == expected and len(bodies) == 600 - 9
    assert answers == expected_answers
    # a refused event is answered in its place; the rest of its batch is taken
    assert answers[3] == [True] * 4 + [answers[3][4]] + [True] * 5 and "2024-13-45" in answers[3][4]
    trusted = {key.keyid: key.verify_key()}
    for body in bodies:
        assert verify_event(orjson.loads(body), trusted)["hostid"] == "h"
    assert threaded.stats.signed == 591 and threaded.stats.rejected == 9


@native
@pytest.mark.anyio
async def test_a_batch_whose_signing_fails_is_failed_alone() -> None:
    key = SigningKey.generate()
    st = Stamper(key, "h", SequenceStore(None))
    q = SinkQueue(1000)
    pipeline = ThreadedPipeline(st, [q], PipelineStats())
    real = pipeline._sign
    calls = [0]

    def flaky(digests: list[bytes]) -> Any:
        calls[0] += 1
        fut = real(digests)
        if calls[0] == 2:  # as when the pool had no memory for this batch's scratch buffers
            fut.set_exception(MemoryError("no memory to sign the batch"))
        return fut

    pipeline._sign = flaky  # type: ignore[method-assign]
    sink = MemorySink()
    async with anyio.create_task_group() as tg:
        tg.start_soon(SinkWorker(sink, q, pipeline.stats.sink("m"), flush_interval=0.01).run)
        with anyio.fail_after(30):
            pending = [await pipeline.submit_guests([guest(i, "vm/0")], "unix:uid=0,pid=1") for i in range(3)]
            assert await pending[0].wait() is True
            with pytest.raises(SinkError, match="no memory"):
                await pending[1].wait()
            assert await pending[2].wait() is True
            await pipeline.aclose()
        pipeline.close()
    assert [orjson.loads(e.body)["id"] for e in sink.events] == ["g0", "g2"]


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@native
@pytest.mark.anyio
async def test_the_signing_threads_start_and_end_with_the_pipeline() -> None:
    before = _threads()
    pipeline = ThreadedPipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [SinkQueue(100)],
                                threads=3)
    assert _threads() == before  # nothing runs until it is started
    assert await pipeline.start() == 3
    assert _threads() == before + 3
    await pipeline.submit_guests([guest(0, "vm/0")], "vsock:3")
    await pipeline.aclose()
    await pipeline.aclose()  # a second close is harmless
    assert _threads() == before
    assert pipeline.stats.signed == 1  # what was submitted before closing reached the queue
    with pytest.raises(SinkError, match="closed"):
        await pipeline.submit_guests([guest(1, "vm/0")], "vsock:3")


def _nice_of_new_threads(before: set[str], count: int) -> list[int]:
    """The nice values of the threads started since ``before``, once each has set its own (they do it first)."""
    for _ in range(500):
        new = set(os.listdir("/proc/self/task")) - before
        nice = sorted(os.getpriority(os.PRIO_PROCESS, int(t)) for t in new)
        if len(new) == count and all(n != os.getpriority(os.PRIO_PROCESS, 0) for n in nice):
            return nice
        time.sleep(0.01)
    return nice


@native
@pytest.mark.anyio
async def test_the_signing_threads_run_below_the_loops_priority() -> None:
    """The loop feeds and drains the signing threads: it must get its core whenever it has work."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    cores = len(os.sched_getaffinity(0))
    if cores > 64:
        pytest.skip("a pool has at most 64 threads")
    before = set(os.listdir("/proc/self/task"))
    pipeline = ThreadedPipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [SinkQueue(100)],
                                threads=cores)  # with the loop's thread, one more than the cores
    await pipeline.start()
    try:
        assert pipeline.nice == SIGN_NICE
        assert _nice_of_new_threads(before, cores) == [min(19, own + SIGN_NICE)] * cores
        assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the loop's thread keeps its own
        await pipeline.submit_guests([guest(0, "vm/0")], "vsock:3")
    finally:
        await pipeline.aclose()
    assert pipeline.stats.signed == 1
    if cores > 1:  # a core each for the loop and the signing threads: they keep the agent's priority
        fewer = ThreadedPipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [SinkQueue(100)],
                                 threads=cores - 1)
        assert fewer.nice == 0


@native
def test_a_pools_priority_is_lowered_at_most_to_19_and_never_raised() -> None:
    from agent._native.edsign import SignPool

    assert _native.Signer is not None
    signer = _native.Signer(os.urandom(32))
    for bad in (-1, 40):
        with pytest.raises(ValueError, match="nice"):
            SignPool(signer, _PAE_HEAD, b"{", b"}", _ENV_TAIL, 1, bad)
    # in a child already at nice 17, five steps down stop at 19; nice=0 leaves the threads at the creator's
    code = (
        "import os, sys, time\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from tests.delivery.test_threaded import _nice_of_new_threads\n"
        "from agent import _native\n"
        "from agent._native.edsign import SignPool\n"
        "from agent.pipeline.stamp import _ENV_TAIL, _PAE_HEAD\n"
        "os.nice(max(0, 17 - os.getpriority(os.PRIO_PROCESS, 0)))\n"
        "before = set(os.listdir('/proc/self/task'))\n"
        "p = SignPool(_native.Signer(os.urandom(32)), _PAE_HEAD, b'{', b'}', _ENV_TAIL, 2, 5)\n"
        "print(_nice_of_new_threads(before, 2), os.getpriority(os.PRIO_PROCESS, 0))\n"
        "p.close()\n"
        "before = set(os.listdir('/proc/self/task'))\n"
        "p = SignPool(_native.Signer(os.urandom(32)), _PAE_HEAD, b'{', b'}', _ENV_TAIL, 1, 0)\n"
        "time.sleep(0.2)\n"
        "print([os.getpriority(os.PRIO_PROCESS, int(t)) for t in set(os.listdir('/proc/self/task')) - before])\n"
        "p.close()\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True, check=True, timeout=60)
    own = max(17, os.getpriority(os.PRIO_PROCESS, 0))  # a runner already below 17 stays where it is
    assert out.stdout.split("\n")[:2] == [f"[19, 19] {own}", f"[{own}]"]


@pytest.mark.anyio
async def test_sign_threads_without_the_native_signer_signs_in_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    st = Stamper(SigningKey.generate(), "h", SequenceStore(None))
    st._native = None
    with caplog.at_level(logging.WARNING, "hoststamp.pipeline"):
        pipeline = build_pipeline(st, [SinkQueue(10)], PipelineStats(), sign_threads=2)
    assert type(pipeline) is Pipeline
    assert "native signer" in caplog.text
    with pytest.raises(ValueError, match="not both"):
        build_pipeline(st, [SinkQueue(10)], PipelineStats(), sign_workers=1, sign_threads=1)


@native
def test_an_agent_with_sign_threads_receives_and_verifies(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    out = tmp_path / "out.ndjson"
    agent = Agent(tmp_path, "a", f"""
[agent]
state_dir = "state"
sign_threads = 2
[[sinks]]
uri = "file:{out}"
[[listeners]]
uri = "unix:{tmp_path}/a.sock"
""", listen=tmp_path / "a.sock").start()
    try:
        rc, err = Sender(tmp_path, f"unix:{tmp_path}/a.sock", guest_events(range(2000)), timeout=30).finish()
        assert rc == 0, err
    finally:
        agent.stop()
    assert ids_in(out) == {f"ev-{i}" for i in range(2000)}
    seqs = [int(orjson.loads(line)["sequence"]) for line in out.read_bytes().splitlines()]
    assert seqs == list(range(1, 2001))
    check = run_cli(["verify", "--pub", str(tmp_path / "keys" / "host.pub"), str(out)], cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_config_refuses_both_ways_at_once_naming_the_keys(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("[agent]\nsign_threads = 2\nsign_workers = 2\n")
    res = run_cli(["config", "check", str(conf)], cwd=tmp_path)
    assert res.returncode == 2
    said = (res.stderr + res.stdout).decode()
    assert "sign_threads" in said and "sign_workers" in said
    conf.write_text("[agent]\nsign_threads = -1\n")
    res = run_cli(["config", "check", str(conf)], cwd=tmp_path)
    assert res.returncode == 2 and b"sign_threads" in res.stderr + res.stdout


@native
@pytest.mark.anyio
async def test_signed_batches_that_cannot_be_taken_fail_rather_than_hang() -> None:
    """If collecting the finished batches fails (no memory for their bytes), which batches were lost is not
    known: every batch being signed fails (its sender sends it again) and later batches go on."""
    st = Stamper(SigningKey.generate(), "h", SequenceStore(None))
    q = SinkQueue(1000)
    pipeline = ThreadedPipeline(st, [q], PipelineStats())
    await pipeline.start()
    real = pipeline._pool

    class Failing:
        failed = False

        def collect(self) -> Any:
            if not Failing.failed:
                Failing.failed = True
                real.collect()  # the finished batches are taken and lost
                raise MemoryError("out of memory")
            return real.collect()

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    pipeline._pool = Failing()  # type: ignore[assignment]
    sink = MemorySink()
    async with anyio.create_task_group() as tg:
        tg.start_soon(SinkWorker(sink, q, pipeline.stats.sink("m"), flush_interval=0.01).run)
        with anyio.fail_after(30):
            first = await pipeline.submit_guests([guest(0, "vm/0")], "vsock:3")
            with pytest.raises(SinkError, match="no memory"):
                await first.wait()
            later = await pipeline.submit_guests([guest(1, "vm/0")], "vsock:3")
            assert await later.wait() is True
            await pipeline.aclose()
        pipeline.close()
    assert [orjson.loads(e.body)["id"] for e in sink.events] == ["g1"]
