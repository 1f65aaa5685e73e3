"""The exit stream against the real kernel: records, the bounded buffer, ENOBUFS, deregistration."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from agent.netlink import ExitRecord, ExitStream, Message, NetlinkSocket, Overrun, has_net_admin, possible_cpus
from agent.netlink.client import resolve_family
from agent.netlink.taskstats import build_deregister, build_register, parse_taskstats

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(30),
    pytest.mark.skipif(not has_net_admin(), reason="the exit stream needs CAP_NET_ADMIN"),
]


async def next_exit_of(stream: ExitStream, pid: int, timeout: float = 10.0) -> ExitRecord:
    async with asyncio.timeout(timeout):
        while True:
            item = await stream.get()
            assert item is not None
            if isinstance(item, ExitRecord) and item.pid == pid:
                return item


async def test_short_lived_childs_exit_arrives_with_pid_and_code() -> None:
    async with ExitStream() as stream:
        child = await asyncio.create_subprocess_exec("sh", "-c", "exit 7")
        await child.wait()
        rec = await next_exit_of(stream, child.pid)
    assert rec.stats.get("ac_pid") == child.pid
    assert rec.stats.get("ac_comm") == "sh"
    assert rec.stats.get("ac_exitcode") == 7 << 8
    assert rec.group is None  # a single-threaded process has no separate group record
    assert stream.sock is None  # stopped: what is left drains, then the stream ends
    async with asyncio.timeout(5):  # a stopped stream hands out what it holds, then ends
        rest = [x async for x in stream]
    assert all(isinstance(x, ExitRecord | Overrun) for x in rest)


async def test_full_buffer_drops_oldest_and_reports_it_once() -> None:
    async with ExitStream(buffer=2) as stream:
        for _ in range(6):
            p = await asyncio.create_subprocess_exec("true")
            await p.wait()
        last = await asyncio.create_subprocess_exec("sh", "-c", "exit 9")
        await last.wait()
        async with asyncio.timeout(10):
            while stream.received < 7:  # (other tasks of the host may exit too: they only add to it)
                await asyncio.sleep(0.01)
        items = []
        while stream.buffer:  # get() returns at once while records wait, so nothing new arrives meanwhile
            items.append(await stream.get())
        items.append(await stream.get())  # caught up: the episode's report
    assert [type(i) for i in items] == [ExitRecord, ExitRecord, Overrun]
    assert items[-1].dropped == stream.dropped == stream.received - 2  # type: ignore[union-attr]


async def test_losses_that_go_on_while_the_consumer_reads_are_one_report_not_one_each() -> None:
    """The buffer fills again after every record the consumer takes (a burst of exits it cannot keep up with):
    one report for the whole burst, once it has caught up, with the running totals."""
    async with ExitStream(buffer=2, report_every=3600) as stream:
        items: list[ExitRecord | Overrun] = []
        for _ in range(20):
            for _ in range(3):
                p = await asyncio.create_subprocess_exec("true")
                await p.wait()
            async with asyncio.timeout(10):
                while not stream.buffer:
                    await asyncio.sleep(0.01)
            item = await stream.get()
            assert item is not None
            items.append(item)
        while stream.buffer:
            items.append(await stream.get())  # type: ignore[arg-type]
        items.append(await stream.get())  # type: ignore[arg-type]
    overruns = [i for i in items if isinstance(i, Overrun)]
    assert len(overruns) == 1 and items[-1] is overruns[0] and overruns[0].dropped == stream.dropped > 0


async def test_losses_soon_after_a_report_wait_for_report_every_and_come_as_one() -> None:
    """The consumer catches up between bursts (the buffer empties each time): the first episode is reported
    once caught up, later ones not before ``report_every`` after it, whatever the buffer does meanwhile; losses
    still unreported when the stream stops are reported last."""

    async def burst(n: int) -> None:
        before = stream.received
        for _ in range(n):
            p = await asyncio.create_subprocess_exec("true")
            await p.wait()
        async with asyncio.timeout(10):
            while stream.received < before + n:
                await asyncio.sleep(0.01)

    async def drain(wait: float) -> list[ExitRecord | Overrun]:
        got: list[ExitRecord | Overrun] = []
        while True:  # until nothing comes for ``wait`` seconds (other tasks of the host may exit too)
            try:
                item = await asyncio.wait_for(stream.get(), wait)
            except TimeoutError:
                return got
            assert item is not None
            got.append(item)
            if isinstance(item, Overrun):
                return got

    async with ExitStream(buffer=2, report_every=3600) as stream:
        await burst(5)
        first = await drain(5)
        assert isinstance(first[-1], Overrun)
        for _ in range(3):  # three more episodes, each caught up with
            await burst(5)
            assert not any(isinstance(i, Overrun) for i in await drain(0.3))
        lost = stream.dropped
        assert lost > first[-1].dropped
    async with asyncio.timeout(5):
        rest = [x async for x in stream]
    assert [type(x) for x in rest][-1:] == [Overrun] and [x for x in rest if isinstance(x, Overrun)] == [rest[-1]]
    assert rest[-1].dropped == stream.dropped >= lost  # type: ignore[union-attr]


async def test_kernel_overrun_is_counted_and_reported() -> None:
    async with ExitStream(rcvbuf=1, buffer=1000) as stream:  # the kernel's minimum receive buffer
        # the loop is blocked while the children exit, so the socket's queue fills up and overflows
        for _ in range(30):
            subprocess.run(["true"], check=True)
        await asyncio.sleep(0)  # let the reader run
        async with asyncio.timeout(10):
            while stream.overruns == 0:
                await asyncio.sleep(0.01)
        while stream.buffer:  # what was queued before the overrun
            await stream.get()
        item = await stream.get()
    assert isinstance(item, Overrun) and item.kernel_overruns >= 1


async def test_deregistration_stops_notifications() -> None:
    mask = possible_cpus()
    seen_a: list[Message] = []
    seen_b: list[Message] = []
    a = NetlinkSocket(unsolicited=seen_a.append)
    b = NetlinkSocket(unsolicited=seen_b.append)
    try:
        fam = (await resolve_family(a)).id
        await a.request(build_register(fam, 0, mask), ack_only=True)
        await b.request(build_register(fam, 0, mask), ack_only=True)
        await a.request(build_deregister(fam, 0, mask), ack_only=True)
        child = await asyncio.create_subprocess_exec("true")
        await child.wait()

        def pids(msgs: list[Message]) -> set[int]:
            return {i for m in msgs if m.type == fam for k, i, _ in parse_taskstats(m) if k == "pid"}

        async with asyncio.timeout(10):  # b, still registered, hears of the exit ...
            while child.pid not in pids(seen_b):
                await asyncio.sleep(0.01)
        # ... and the kernel told every listener in the same pass: two loop turns and a's reader has run
        for _ in range(3):
            await asyncio.sleep(0)
        assert child.pid not in pids(seen_a)
        await b.request(build_deregister(fam, 0, mask), ack_only=True)
    finally:
        a.close()
        b.close()


async def test_stop_wakes_a_waiting_reader_and_is_idempotent() -> None:
    stream = ExitStream()
    await stream.start()

    async def drain() -> int:
        return len([x async for x in stream])

    waiter = asyncio.create_task(drain())
    await asyncio.sleep(0)
    await stream.stop()
    await stream.stop()
    async with asyncio.timeout(5):
        assert await waiter >= 0
    assert stream.sock is None


def test_possible_cpus(tmp_path: object) -> None:
    from pathlib import Path

    p = Path(str(tmp_path)) / "possible"
    p.write_text("0-3\n")
    assert possible_cpus(p) == "0-3"
    assert possible_cpus(Path(str(tmp_path)) / "missing").startswith("0-")
    # not a cpulist, not text, or a FIFO (which would block the exit stream's start): the fallback
    fallback = possible_cpus(Path(str(tmp_path)) / "missing")
    for name, content in (("junk", b"0-1,\xe9\n"), ("empty", b""), ("words", b"all of them\n")):
        (Path(str(tmp_path)) / name).write_bytes(content)
        assert possible_cpus(Path(str(tmp_path)) / name) == fallback
    os.mkfifo(Path(str(tmp_path)) / "fifo")
    assert possible_cpus(Path(str(tmp_path)) / "fifo") == fallback
    assert possible_cpus(Path(str(tmp_path)) / "possible") == "0-3"
    (Path(str(tmp_path)) / "many").write_text("0,2-5,7\n")
    assert possible_cpus(Path(str(tmp_path)) / "many") == "0,2-5,7"
    with pytest.raises(ValueError):
        ExitStream(buffer=0)
