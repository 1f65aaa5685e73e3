"""Firecracker's hybrid vsock, host side.

Firecracker exposes a guest's vsock device as a unix socket ``UDS``:

* guest -> host: when the guest connects to host port ``P``, Firecracker
  connects to the unix socket ``UDS_P``; we listen there. Every peer is the
  Firecracker process, so peers are named by the listener's configured name.
* host -> guest: we connect to ``UDS`` and write ``CONNECT P\\n``; Firecracker
  answers ``OK <host port>\\n`` once the guest accepted, or closes the socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import TransportError
from .stream import ClosedMidLine, SocketListener, SocketStream
from .unix import bind_unix, connect_unix
from .uri import FcVsockEndpoint

__all__ = ["connect_fcvsock", "handshake_request", "listen_fcvsock", "parse_handshake_reply"]

#: longest reply line we accept ("OK 4294967295\n" is 14 bytes)
_REPLY_MAX = 64


def handshake_request(port: int) -> bytes:
    return f"CONNECT {port}\n".encode("ascii")


def parse_handshake_reply(line: bytes) -> int:
    """The host-side port from ``OK <n>\\n``; anything else is a TransportError."""
    text = line.rstrip(b"\r\n")
    parts = text.split(b" ")
    if len(parts) != 2 or parts[0] != b"OK" or not parts[1].isdigit():
        raise TransportError(f"unexpected Firecracker handshake reply {line[:_REPLY_MAX]!r}")
    return int(parts[1])


async def connect_fcvsock(ep: FcVsockEndpoint, *, timeout: float = 5.0) -> SocketStream:
    """Connect to guest port ``ep.port`` through Firecracker's socket ``ep.uds``."""
    stream = await connect_unix(ep.uds, timeout=timeout, peer=ep.uri)
    try:
        async with asyncio.timeout(timeout):
            await stream.send(handshake_request(ep.port))
            parse_handshake_reply(await stream.readline(_REPLY_MAX))
    except BaseException as exc:  # a cancelled dial too: the socket must not outlive it
        await stream.aclose()
        if isinstance(exc, TimeoutError):
            raise TransportError(f"{ep.uri}: no handshake reply") from exc
        if isinstance(exc, ClosedMidLine):
            raise TransportError(f"{ep.uri}: {_refused_connect(ep, exc.partial)}") from exc
        raise
    return stream


def _refused_connect(ep: FcVsockEndpoint, partial: bytes) -> str:
    """What it means that Firecracker's socket closed after ``partial`` of a reply to ``CONNECT``."""
    if not partial:
        return (f"the Firecracker socket closed the connection without answering OK to CONNECT {ep.port} "
                f"(nothing in the guest listening on port {ep.port}, say)")
    return (f"the Firecracker socket closed the connection in the middle of its answer to "
            f"CONNECT {ep.port}: {partial[:_REPLY_MAX]!r}")


def listen_fcvsock(ep: FcVsockEndpoint, *, name: str | None = None, backlog: int = 128,
                   mode: int | None = None) -> SocketListener:
    """Listen on ``UDS_PORT``; each connection's peer is ``name`` (default: the URI). A TransportError when it
    cannot names the URI as configured and the socket file."""
    peer = name or ep.uri
    sock, remove = bind_unix(ep.listen_path, backlog=backlog, mode=mode, name=f"{ep.uri} (socket {ep.listen_path})")

    def peer_of(_sock: Any, _addr: Any) -> str:
        return peer

    return SocketListener(sock, ep.uri, peer_of, on_close=remove)
