"""AF_VSOCK stream sockets: a listener naming peers ``vsock:CID``, and a client.

Only listening is exercised by the tests: on this machine CID 2 is the real
host and there is no loopback CID, so nothing here is ever connected in tests.
"""

from __future__ import annotations

import socket
from typing import Any

from ..errors import TransportError
from .stream import SocketListener, SocketStream, connect_socket
from .uri import VMADDR_CID_ANY, VsockEndpoint

__all__ = ["connect_vsock", "listen_vsock", "vsock_available", "vsock_peer"]


def vsock_available() -> bool:
    """Whether this kernel lets us make an AF_VSOCK socket."""
    if not hasattr(socket, "AF_VSOCK"):
        return False
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


def vsock_peer(_sock: socket.socket, addr: Any) -> str:
    cid, _port = addr
    return f"vsock:{cid}"


def _socket() -> socket.socket:
    try:
        return socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    except (AttributeError, OSError) as exc:
        raise TransportError(f"AF_VSOCK is not available here: {exc}") from exc


def listen_vsock(ep: VsockEndpoint, *, backlog: int = 128) -> SocketListener:
    sock = _socket()
    try:
        sock.bind((VMADDR_CID_ANY if ep.cid is None else ep.cid, ep.port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise TransportError(f"{ep.uri}: cannot listen: {exc.strerror or exc}") from exc
    return SocketListener(sock, ep.uri, vsock_peer)


async def connect_vsock(ep: VsockEndpoint, *, timeout: float = 5.0) -> SocketStream:
    if ep.cid is None:
        raise TransportError(f"{ep.uri}: a client needs a CID")
    return await connect_socket(_socket(), (ep.cid, ep.port), uri=ep.uri, peer=f"vsock:{ep.cid}", timeout=timeout)
