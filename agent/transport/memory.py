"""In-memory streams and listeners: the transport fake for tests and benchmarks.

``memory_pair()`` makes two connected ends; ``MemoryListener`` hands out the
server end of each ``connect()``. Each direction is a bounded buffer, so a
writer waits while its peer does not read, like a real socket.
"""

from __future__ import annotations

import asyncio
import itertools

from ..errors import TransportError
from .base import RECEIVE_SIZE, ByteStream, Listener

__all__ = ["MemoryListener", "MemoryStream", "memory_pair"]


class _Pipe:
    """One direction: bytes written by one end, read by the other."""

    def __init__(self, capacity: int) -> None:
        self.buf = bytearray()
        self.capacity = capacity
        self.eof = False
        self.broken = False
        self.changed = asyncio.Event()

    def notify(self) -> None:
        self.changed.set()


class MemoryStream(ByteStream):
    def __init__(self, inbound: _Pipe, outbound: _Pipe, peer: str) -> None:
        self._in = inbound
        self._out = outbound
        self.peer = peer
        self.closed = False

    async def receive(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        pipe = self._in
        while not pipe.buf:
            if pipe.eof or self.closed:
                return b""
            if pipe.broken:
                raise TransportError(f"{self.peer}: connection reset")
            pipe.changed.clear()
            await pipe.changed.wait()
        data = bytes(pipe.buf[:max_bytes])
        del pipe.buf[:max_bytes]
        pipe.notify()
        return data

    async def send(self, data: bytes) -> None:
        pipe = self._out
        view = memoryview(data)
        while view:
            if self.closed or pipe.eof or pipe.broken:
                raise TransportError(f"{self.peer}: send on a closed connection")
            room = pipe.capacity - len(pipe.buf)
            if room <= 0:
                pipe.changed.clear()
                await pipe.changed.wait()
                continue
            pipe.buf += view[:room]
            view = view[room:]
            pipe.notify()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._out.eof = True
        self._out.notify()
        # what we never read makes the peer's writes fail, as a reset would
        self._in.broken = True
        self._in.buf.clear()
        self._in.notify()


def memory_pair(a: str = "memory:a", b: str = "memory:b", *, capacity: int = 1 << 16) -> tuple[MemoryStream,
                                                                                            MemoryStream]:
    """Two connected streams; ``a`` is the peer name the second end sees, and vice versa."""
    ab, ba = _Pipe(capacity), _Pipe(capacity)
    return MemoryStream(ba, ab, b), MemoryStream(ab, ba, a)


class MemoryListener(Listener):
    """Hands out the server end of every :meth:`connect`."""

    _ids = itertools.count(1)

    def __init__(self, address: str = "memory:listener", *, capacity: int = 1 << 16) -> None:
        self.address = address
        self.capacity = capacity
        self._pending: asyncio.Queue[MemoryStream] = asyncio.Queue()
        self._closed = False
        #: peer names handed out so far, in order
        self.peers: list[str] = []

    async def connect(self, peer: str | None = None) -> MemoryStream:
        """A client end; the server end is queued for :meth:`accept` and named ``peer``."""
        if self._closed:
            raise TransportError(f"{self.address}: connection refused")
        name = peer or f"memory:{next(self._ids)}"
        client, server = memory_pair(name, self.address, capacity=self.capacity)
        self.peers.append(name)
        self._pending.put_nowait(server)
        return client

    async def accept(self) -> MemoryStream:
        return await self._pending.get()

    async def aclose(self) -> None:
        self._closed = True
