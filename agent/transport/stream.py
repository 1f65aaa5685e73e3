"""Asyncio implementations of :class:`ByteStream` and :class:`Listener` over sockets.

Streams wrap asyncio's stream reader and writer; listeners accept with
``loop.sock_accept`` on a plain non-blocking socket, which works for every
address family (anyio's listener sets TCP_NODELAY on accept and fails on
AF_VSOCK with ENOPROTOOPT). OS errors are translated to TransportError here.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Callable
from typing import Any

from ..errors import TransportError
from .base import RECEIVE_SIZE, ByteStream, Listener

__all__ = ["ClosedMidLine", "SocketListener", "SocketStream", "connect_socket", "stream_from_socket"]

#: asyncio buffers at most about twice this before it stops reading the socket
_READ_LIMIT = 1 << 18
#: seconds a close waits for buffered bytes to leave before it aborts
_CLOSE_GRACE = 1.0


class ClosedMidLine(TransportError):
    """The peer closed before a full line of :meth:`SocketStream.readline`; ``partial`` is what came of it."""

    def __init__(self, msg: str, partial: bytes) -> None:
        super().__init__(msg)
        self.partial = partial


class SocketStream(ByteStream):
    """A connected socket as a :class:`ByteStream`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        self._reader = reader
        self._writer = writer
        self.peer = peer

    async def receive(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        try:
            return await self._reader.read(max_bytes)
        except OSError as exc:
            raise TransportError(f"{self.peer}: receive failed: {exc.strerror or exc}") from exc

    async def readline(self, limit: int) -> bytes:
        """One ``\\n``-terminated line of at most ``limit`` bytes (handshakes); bytes after it stay buffered."""
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            raise ClosedMidLine(f"{self.peer}: closed before a full line", exc.partial) from exc
        except asyncio.LimitOverrunError as exc:
            raise TransportError(f"{self.peer}: line too long") from exc
        except OSError as exc:
            raise TransportError(f"{self.peer}: receive failed: {exc.strerror or exc}") from exc
        if len(line) > limit:
            raise TransportError(f"{self.peer}: line too long ({len(line)} bytes)")
        return line

    async def send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:  # RuntimeError: write after close
            raise TransportError(f"{self.peer}: send failed: {exc}") from exc

    async def aclose(self) -> None:
        self._writer.close()
        try:
            async with asyncio.timeout(_CLOSE_GRACE):
                await self._writer.wait_closed()
        except TimeoutError:
            # the peer is not reading what is still buffered: drop it
            self._writer.transport.abort()
        except (OSError, RuntimeError):
            pass

    def hung_up(self) -> bool:
        # a peer that only shut down its sending side still reads (POLLRDHUP alone); one that closed is POLLHUP
        sock: Any = self._writer.get_extra_info("socket")
        if sock is None or self._writer.transport.is_closing():
            return self._writer.transport.is_closing()
        try:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
            return any(ev & (select.POLLHUP | select.POLLERR) for _fd, ev in poller.poll(0))
        except (OSError, ValueError):
            return False

    @property
    def socket(self) -> socket.socket | None:
        sock: Any = self._writer.get_extra_info("socket")
        return sock if isinstance(sock, socket.socket) else None


async def stream_from_socket(sock: socket.socket, peer: str) -> SocketStream:
    """Wrap a connected stream socket of any family."""
    sock.setblocking(False)
    try:
        reader, writer = await asyncio.open_connection(sock=sock, limit=_READ_LIMIT)
    except (OSError, ValueError) as exc:
        sock.close()
        raise TransportError(f"{peer}: cannot use socket: {exc}") from exc
    return SocketStream(reader, writer, peer)


async def connect_socket(sock: socket.socket, address: Any, *, uri: str, peer: str, timeout: float) -> SocketStream:
    """Connect ``sock`` to ``address`` within ``timeout``; the socket is closed on failure."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, address)
    except TimeoutError as exc:
        sock.close()
        raise TransportError(f"{uri}: connect timed out") from exc
    except OSError as exc:
        sock.close()
        raise TransportError(f"{uri}: cannot connect: {exc.strerror or exc}") from exc
    return await stream_from_socket(sock, peer)


#: the peer name of an accepted socket, from the socket and the address accept returned
PeerOf = Callable[[socket.socket, Any], str]


class SocketListener(Listener):
    """A listening socket; ``peer_of`` names each accepted connection."""

    def __init__(self, sock: socket.socket, address: str, peer_of: PeerOf,
                 on_close: Callable[[], None] | None = None) -> None:
        sock.setblocking(False)
        self._sock = sock
        self.address = address
        self._peer_of = peer_of
        self._on_close = on_close
        self._closed = False

    async def accept(self) -> SocketStream:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(self._sock)
            except (ConnectionAbortedError, BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                raise TransportError(f"{self.address}: accept failed: {exc.strerror or exc}") from exc
            try:
                peer = self._peer_of(conn, addr)
            except OSError:
                conn.close()
                continue
            return await stream_from_socket(conn, peer)

    def fileno(self) -> int:
        return self._sock.fileno()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        if self._on_close is not None:
            self._on_close()
