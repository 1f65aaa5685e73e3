"""Connect to or listen on an endpoint URI, whatever its scheme."""

from __future__ import annotations

from .base import ByteStream, Dialer, Listener
from .fcvsock import connect_fcvsock, listen_fcvsock
from .unix import connect_unix, listen_unix
from .uri import Endpoint, FcVsockEndpoint, UnixEndpoint, VsockEndpoint, parse_endpoint
from .vsock import connect_vsock, listen_vsock

__all__ = ["connect", "dialer", "listen"]


async def connect(target: str | Endpoint, *, timeout: float = 5.0) -> ByteStream:
    """One client connection; TransportError when it cannot be made within ``timeout``."""
    ep = parse_endpoint(target) if isinstance(target, str) else target
    if isinstance(ep, UnixEndpoint):
        return await connect_unix(ep.path, timeout=timeout)
    if isinstance(ep, VsockEndpoint):
        return await connect_vsock(ep, timeout=timeout)
    return await connect_fcvsock(ep, timeout=timeout)


def dialer(target: str | Endpoint, *, timeout: float = 5.0) -> Dialer:
    """A function that makes a new connection each time it is called."""
    ep = parse_endpoint(target) if isinstance(target, str) else target

    async def dial() -> ByteStream:
        return await connect(ep, timeout=timeout)

    return dial


def listen(target: str | Endpoint, *, name: str | None = None, backlog: int = 128,
           mode: int | None = None) -> Listener:
    """Bind and listen; ``name`` is the peer name of Firecracker connections; ``mode`` chmods a socket file."""
    ep = parse_endpoint(target, listen=True) if isinstance(target, str) else target
    if isinstance(ep, UnixEndpoint):
        return listen_unix(ep.path, backlog=backlog, mode=mode)
    if isinstance(ep, VsockEndpoint):
        return listen_vsock(ep, backlog=backlog)
    assert isinstance(ep, FcVsockEndpoint)
    return listen_fcvsock(ep, name=name, backlog=backlog, mode=mode)
