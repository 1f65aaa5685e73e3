"""``send_ndjson`` (hoststamp send) against the real receiver: line numbers, refusals, acks."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agent.config import ListenerOptions
from agent.receiver import MemoryDeliver, Receiver
from agent.transport import SendReport, send_ndjson

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def line(i: int) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": f"s-{i}", "source": "guest://x", "type": "t.v1"})


def send_to_receiver(tmp_path: Path, data: bytes, deliver: Any = None, **kw: Any) -> tuple[SendReport, list[str]]:
    durable = MemoryDeliver()

    async def main() -> SendReport:
        rx = Receiver.build(ListenerOptions(uri=f"unix:{tmp_path}/rx.sock"), deliver or durable)
        serving = asyncio.ensure_future(rx.serve())
        try:
            return await send_ndjson(f"unix:{tmp_path}/rx.sock", io.BytesIO(data), **kw)
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    return run(main()), durable.ids()


def test_all_good_lines_are_acked(tmp_path: Path) -> None:
    data = b"".join(line(i) + b"\n" for i in range(2000))
    report, ids = send_to_receiver(tmp_path, data, max_unacked=100)
    assert report.ok
    assert (report.lines, report.sent, report.acked) == (2000, 2000, 2000)
    assert ids == [f"s-{i}" for i in range(2000)]


def test_problems_are_reported_by_line_number(tmp_path: Path) -> None:
    data = b"\n".join([line(1), b"", b"{broken", line(2), b'{"id":"x"}', b"[1]", line(3)])  # no final newline
    report, ids = send_to_receiver(tmp_path, data)
    assert not report.ok
    assert report.lines == 7
    assert (report.sent, report.acked) == (4, 3)
    assert [n for n, _r in report.problems] == [3, 5, 6]
    assert report.problems[1][1].startswith("attributes:")
    assert ids == ["s-1", "s-2", "s-3"]


@pytest.mark.parametrize("chunk", [7, 64, 1 << 16])
def test_an_over_long_line_is_reported_and_the_lines_after_it_are_sent(tmp_path: Path, chunk: int) -> None:
    data = (line(1) + b"\n" + b"x" * 300 + b"\n" + line(2) + b"\r\n" + b"y" * 201 + b"\n"
            + b"z" * 200 + b"\n" + line(3) + b"\n" + b"w" * 500)  # the last line has no newline
    report, ids = send_to_receiver(tmp_path, data, max_frame=200, read=lambda f, n: f.read(min(n, chunk)))
    assert [n for n, _r in report.problems] == [2, 4, 5, 7]
    assert "exceeds the maximum of 200" in report.problems[0][1]
    assert report.problems[2][1].startswith("not JSON")  # 200 bytes: not too long, but not JSON either
    assert report.error is None and report.lines == 7
    assert ids == ["s-1", "s-2", "s-3"]


def test_unreachable_receiver_is_an_error_not_a_hang(tmp_path: Path) -> None:
    report = run(send_ndjson(f"unix:{tmp_path}/nobody.sock", io.BytesIO(line(1) + b"\n"), timeout=0.2))
    assert not report.ok
    assert report.error is not None and "not acknowledged" in report.error
    assert "cannot connect" in report.error


def test_drops_are_reported_even_while_an_earlier_line_never_settles(tmp_path: Path) -> None:
    def first_stuck_rest_dropped(event: dict[str, Any], peer: str) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if event["id"] != "s-0":
            fut.set_result(False)
        return fut

    data = b"".join(line(i) + b"\n" for i in range(4))
    report, _ids = send_to_receiver(tmp_path, data, deliver=first_stuck_rest_dropped, timeout=0.5)
    assert not report.ok and report.error is not None and "not acknowledged" in report.error
    assert [(n, r.split(":")[0]) for n, r in report.problems] == [(2, "dropped"), (3, "dropped"), (4, "dropped")]


def test_lines_go_out_as_a_slow_writer_produces_them(tmp_path: Path) -> None:
    import os

    got = MemoryDeliver()

    async def main() -> SendReport:
        rx = Receiver.build(ListenerOptions(uri=f"unix:{tmp_path}/rx.sock"), got)
        serving = asyncio.ensure_future(rx.serve())
        r, w = os.pipe()
        with os.fdopen(r, "rb") as rf, os.fdopen(w, "wb", buffering=0) as wf:
            wf.write(line(1) + b"\n")
            sending = asyncio.ensure_future(send_ndjson(f"unix:{tmp_path}/rx.sock", rf))
            while not got.got:  # the first line arrives while the pipe is still open
                await asyncio.sleep(0.005)
            wf.write(line(2) + b"\n")
            wf.close()
            report = await sending
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        return report

    report = run(main())
    assert report.ok and report.acked == 2
    assert got.ids() == ["s-1", "s-2"]


def test_send_fills_the_window_for_a_receiver_that_acks_every_so_many_frames(tmp_path: Path) -> None:
    """A receiver may ack only every 700 frames (docs/protocol.md lets it coalesce acks): with a window of
    1,000 ``send`` keeps sending until 700 are out, whatever the size of its reads of stdin."""
    path = tmp_path / "coalescing.sock"
    got: list[int] = []

    async def downstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while True:
            try:
                size = int.from_bytes(await reader.readexactly(4), "big")
                await reader.readexactly(size)
            except asyncio.IncompleteReadError:
                return
            n += 1
            got.append(n)
            if n % 700 == 0 or n == 1400:
                ack = orjson.dumps({"ack": n})
                writer.write(len(ack).to_bytes(4, "big") + ack)
                await writer.drain()

    async def main() -> SendReport:
        server = await asyncio.start_unix_server(downstream, str(path))
        # lines of about 110 bytes: one read of stdin (64 KiB) holds some 600, less than an ack's worth
        data = b"".join(orjson.dumps({"specversion": "1.0", "id": f"s-{i:05d}", "source": "guest://x",
                                      "type": "t.v1", "data": {"pad": "x" * 20}}) + b"\n" for i in range(1400))
        try:
            return await send_ndjson(f"unix:{path}", io.BytesIO(data), timeout=10.0)
        finally:
            server.close()

    report = run(main())
    assert (report.sent, report.acked, report.ok) == (1400, 1400, True), report
    assert got == list(range(1, 1401))


def test_an_input_that_cannot_be_read_further_is_an_error_and_what_was_read_is_still_acked(tmp_path: Path) -> None:
    """A read of stdin that fails (EIO of a terminal gone, EISDIR) ends the reading, not the run: the lines read
    before it are sent and settled, and the report says after which line the input was lost."""
    import errno

    data = line(1) + b"\n" + line(2) + b"\n" + line(3)[:10]  # the third line is cut short by the failure

    def fails_after_the_first_read(f: Any, n: int) -> bytes:
        if f.tell():
            raise OSError(errno.EIO, "Input/output error")
        return bytes(f.read(n))

    report, ids = send_to_receiver(tmp_path, data, read=fails_after_the_first_read)
    assert not report.ok and (report.sent, report.acked) == (2, 2)
    assert report.error == "cannot read the input after line 2: Input/output error"
    assert report.unsent_from == 3
    assert ids == ["s-1", "s-2"]


def test_an_input_that_cannot_be_read_at_all_says_so_without_a_line_number(tmp_path: Path) -> None:
    def fails(_f: Any, _n: int) -> bytes:
        raise IsADirectoryError(21, "Is a directory")

    report, ids = send_to_receiver(tmp_path, b"", read=fails)
    assert not report.ok and (report.sent, report.acked, report.unsent_from) == (0, 0, 1)
    assert report.error == "cannot read the input: Is a directory"
    assert ids == []


def test_with_a_timeout_send_tries_again_at_least_every_quarter_of_it() -> None:
    """A receiver back before the time is up is tried again in time: no wait of 30 s inside a 4 s window."""
    from agent.transport.send import retry_backoff

    assert retry_backoff(None).maximum == 30.0
    b = retry_backoff(4.0)
    assert b.maximum == 1.0 and max(b.next() for _ in range(100)) <= 1.0
    short = retry_backoff(0.2)
    assert (short.initial, short.maximum) == (0.05, 0.05)
