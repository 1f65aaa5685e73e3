"""The in-memory transport fake behaves like a socket: ordered bytes, EOF, reset, backpressure."""

from __future__ import annotations

import asyncio

import pytest

from agent.errors import TransportError
from agent.transport import MemoryListener, memory_pair


def test_pair_carries_bytes_both_ways_and_names_peers() -> None:
    async def main() -> None:
        a, b = memory_pair("memory:left", "memory:right")
        assert (a.peer, b.peer) == ("memory:right", "memory:left")
        await a.send(b"hello ")
        await a.send(b"world")
        assert await b.receive(5) == b"hello"
        assert await b.receive() == b" world"
        await b.send(b"back")
        assert await a.receive() == b"back"
        await a.aclose()
        assert await b.receive() == b""
        with pytest.raises(TransportError):
            await b.send(b"to a closed peer")

    asyncio.run(asyncio.wait_for(main(), 5))


def test_writer_waits_while_the_reader_does_not_read() -> None:
    async def main() -> None:
        a, b = memory_pair(capacity=4)
        task = asyncio.ensure_future(a.send(b"0123456789"))
        await asyncio.sleep(0)
        assert not task.done()
        got = b""
        while len(got) < 10:
            got += await b.receive()
        await task
        assert got == b"0123456789"

    asyncio.run(asyncio.wait_for(main(), 5))


def test_listener_hands_out_server_ends() -> None:
    async def main() -> None:
        lst = MemoryListener("memory:srv")
        client = await lst.connect("memory:guest-1")
        server = await lst.accept()
        assert server.peer == "memory:guest-1"
        assert client.peer == "memory:srv"
        await lst.aclose()
        with pytest.raises(TransportError):
            await lst.connect()

    asyncio.run(asyncio.wait_for(main(), 5))
