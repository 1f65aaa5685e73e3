"""The reliable sender against scripted downstreams: re-send after loss, refusals, backoff."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.codec.framing import LengthPrefixedDecoder, encode_frame
from agent.errors import TransportError
from agent.transport import Ack, AckedSender, Backoff, ByteStream, MemoryListener, dialer, encode_ack, listen

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def downstream(stream: ByteStream, got: list[bytes], *, take: int | None = None,
                     refuse: frozenset[bytes] = frozenset()) -> None:
    """Ack each frame after recording it; after ``take`` frames, vanish without acking more."""
    dec = LengthPrefixedDecoder()
    n = 0
    while chunk := await stream.receive():
        dec.feed(chunk)
        for f in dec.frames():
            if take is not None and n >= take:
                await stream.aclose()
                return
            n += 1
            got.append(f)
            rejected = ((n, "attributes: test refusal"),) if f in refuse else ()
            await stream.send(encode_frame(encode_ack(Ack(n, rejected))))
    await stream.aclose()


def items(n: int) -> list[bytes]:
    return [f'{{"id":"{i}"}}'.encode() for i in range(n)]


def make_sender(lst: MemoryListener, **kw: Any) -> AckedSender[bytes]:
    return AckedSender(lst.connect, lambda b: b, name="test", backoff=Backoff(0.001, 0.01), **kw)


def test_everything_arrives_in_order_across_two_lost_connections() -> None:
    async def main() -> tuple[list[bytes], AckedSender[bytes]]:
        lst = MemoryListener()
        got: list[bytes] = []
        sender = make_sender(lst, max_unacked=50)

        async def serve() -> None:
            await downstream(await lst.accept(), got, take=30)
            await downstream(await lst.accept(), got, take=45)
            await downstream(await lst.accept(), got)

        server = asyncio.ensure_future(serve())
        for chunk in range(0, 200, 20):
            await sender.put(items(200)[chunk : chunk + 20], timeout=5)
        await sender.drain(timeout=5)
        await sender.aclose()
        server.cancel()
        return got, sender

    got, sender = run(main())
    assert got == items(200)  # acked only after recording: exactly once here, in order
    assert sender.stats.connects == 3
    assert sender.stats.acked == 200
    assert sender.stats.frames_resent > 0


def test_refused_items_are_reported() -> None:
    refused: list[tuple[bytes, str]] = []

    async def main() -> AckedSender[bytes]:
        lst = MemoryListener()
        got: list[bytes] = []
        sender = make_sender(lst, on_settled=lambda d, r: refused.extend(r))

        async def serve() -> None:
            await downstream(await lst.accept(), got, refuse=frozenset({items(3)[1]}))

        server = asyncio.ensure_future(serve())
        await sender.put(items(3))
        await sender.drain(timeout=5)
        await sender.aclose()
        server.cancel()
        return sender

    sender = run(main())
    assert refused == [(items(3)[1], "attributes: test refusal")]
    assert (sender.stats.acked, sender.stats.rejected) == (2, 1)


def test_oversized_payload_is_refused_at_once(caplog: pytest.LogCaptureFixture) -> None:
    refused: list[tuple[bytes, str]] = []

    async def main() -> int:
        sender = make_sender(MemoryListener(), max_frame=8, on_settled=lambda d, r: refused.extend(r))
        await sender.put([b"x" * 9, b""])
        n = sender.pending
        await sender.aclose()
        return n

    with caplog.at_level(logging.WARNING):
        assert run(main()) == 0
    assert [r for _i, r in refused] == ["too_large: frame of 9 bytes outside 1..8",
                                        "too_large: frame of 0 bytes outside 1..8"]
    # left out here, never sent: not said to be the downstream's refusal
    (line,) = [r.getMessage() for r in caplog.records]
    assert "no frame can carry was not sent" in line and "downstream" not in line


def test_put_times_out_when_nobody_acks() -> None:
    async def main() -> None:
        lst = MemoryListener()
        sender = make_sender(lst, max_unacked=2)
        await sender.put(items(2))
        with pytest.raises(TransportError, match="no room"):
            await sender.put(items(1), timeout=0.05)
        with pytest.raises(TransportError, match="not acknowledged"):
            await sender.drain(timeout=0.05)
        await sender.aclose()

    run(main())


def test_silent_downstream_is_dropped_after_ack_timeout() -> None:
    async def main() -> AckedSender[bytes]:
        lst = MemoryListener()
        got: list[bytes] = []
        sender = make_sender(lst, ack_timeout=0.5)

        async def serve() -> None:
            silent = await lst.accept()  # reads nothing, acks nothing
            await downstream(await lst.accept(), got)
            del silent

        server = asyncio.ensure_future(serve())
        await sender.put(items(5))
        await sender.drain(timeout=5)
        await sender.aclose()
        server.cancel()
        assert got == items(5)
        return sender

    sender = run(main())
    assert sender.stats.ack_timeouts == 1


def test_unreachable_then_reachable_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "later.sock"

    async def main() -> AckedSender[bytes]:
        sender: AckedSender[bytes] = AckedSender(dialer(f"unix:{path}"), lambda b: b, name=f"unix:{path}",
                                                 backoff=Backoff(0.001, 0.02))
        await sender.put(items(10))
        while sender.stats.connect_failures < 3:
            await asyncio.sleep(0.005)
        lst = listen(f"unix:{path}")
        got: list[bytes] = []
        server = asyncio.ensure_future(downstream(await lst.accept(), got))
        await sender.drain(timeout=5)
        await sender.aclose()
        server.cancel()
        await lst.aclose()
        assert got == items(10)
        return sender

    sender = run(main())
    assert sender.last_error is not None and "cannot connect" in sender.last_error
    assert not sender.last_error.startswith(f"{sender.name}:")  # logged after the name: not said twice
    assert os.path.exists(path) is False


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    b = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5
    zero = Backoff(0.5, 4.0, rng=lambda: 0.0)
    assert zero.next() == 0.0
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_a_caller_cancelled_while_closing_the_sender_stays_cancelled() -> None:
    """aclose must not swallow its caller's own cancellation (a timeout or a shutdown around it would be lost)."""

    class SlowToClose(ByteStream):
        peer = "slow"

        def __init__(self) -> None:
            self.closing = asyncio.Event()
            self.release = asyncio.Event()

        async def receive(self, max_bytes: int = 1 << 16) -> bytes:
            await asyncio.Event().wait()
            return b""

        async def send(self, data: bytes) -> None:
            pass

        async def aclose(self) -> None:
            self.closing.set()
            await self.release.wait()

    async def main() -> bool:
        stream = SlowToClose()

        async def dial() -> ByteStream:
            return stream

        sender: AckedSender[bytes] = AckedSender(dial, lambda b: b, name="t")
        await sender.put(items(1))
        while not sender.connected:
            await asyncio.sleep(0.001)
        closing = asyncio.ensure_future(sender.aclose())
        await stream.closing.wait()  # the sender's task is stuck closing its stream
        closing.cancel()
        stream.release.set()
        await asyncio.gather(closing, return_exceptions=True)
        return closing.cancelled()

    assert run(main())


def test_abort_stops_the_sender_without_waiting(tmp_path: Path) -> None:
    async def main() -> AckedSender[bytes]:
        sender: AckedSender[bytes] = AckedSender(dialer(f"unix:{tmp_path}/nobody.sock"), lambda b: b,
                                                 name="unix:nobody", backoff=Backoff(0.001, 0.02))
        await sender.put(items(3))
        while sender.stats.connect_failures < 2:
            await asyncio.sleep(0.005)
        sender.abort()  # no await: what a cut-short close can still do
        await asyncio.sleep(0.05)
        return sender

    sender = run(main())
    assert sender._task is not None and sender._task.done()


def test_the_same_failure_after_each_reconnect_is_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    """A downstream that takes every connection and then fails the same way (an ack ahead of what was sent):
    one warning, not one per reconnect; once something is delivered, the same failure is news again."""

    async def main() -> AckedSender[bytes]:
        lst = MemoryListener()
        got: list[bytes] = []
        sender = make_sender(lst)

        async def liar() -> None:
            stream = await lst.accept()
            await stream.receive()
            await stream.send(encode_frame(encode_ack(Ack(10**6, ()))))
            await stream.receive()  # until the sender hangs up

        async def serve() -> None:
            for _ in range(4):
                await liar()
            await downstream(await lst.accept(), got, take=1)  # one delivered, then gone
            for _ in range(2):
                await liar()
            await downstream(await lst.accept(), got)

        server = asyncio.ensure_future(serve())
        await sender.put(items(3))
        await sender.drain(timeout=10)
        await sender.aclose()
        await server
        assert got == items(3)
        return sender

    with caplog.at_level(logging.DEBUG, logger="agent.transport"):
        sender = run(main(), timeout=20)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sender.stats.connects == 8
    bad_ack = [w for w in warned if "bad ack stream" in w]
    assert len(bad_ack) == 2, warned  # the first time, and again after the delivery between
    assert len([r for r in caplog.records if "bad ack stream" in r.getMessage()]) == 6  # the rest in the debug log
    assert not [r for r in caplog.records if r.getMessage() == "test: connected"]  # no connect ever failed
