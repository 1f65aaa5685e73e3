"""Unix stream sockets: client, and a listener that names peers by SO_PEERCRED."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
from typing import Any

from ..errors import TransportError
from .stream import SocketListener, SocketStream, connect_socket
from .uri import UnixEndpoint

__all__ = ["connect_unix", "listen_unix", "peer_credentials", "unix_peer"]

_UCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def unix_peer(sock: socket.socket, _addr: Any = None) -> str:
    pid, uid, _gid = peer_credentials(sock)
    return f"unix:uid={uid},pid={pid}"


async def connect_unix(path: str, *, timeout: float = 5.0, peer: str | None = None) -> SocketStream:
    """Connect to a unix stream socket (``@NAME`` for an abstract one)."""
    ep = UnixEndpoint(path)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:  # EMFILE and friends: a sender retries a TransportError, anything else ends it
        raise TransportError(f"{ep.uri}: cannot connect: {exc.strerror or exc}") from exc
    return await connect_socket(sock, ep.address, uri=ep.uri, peer=peer or ep.uri, timeout=timeout)


def _remove_stale(path: str, name: str) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else (``name``: what messages call it)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:  # a file where a directory of the path should be, a loop of links, ...
        raise TransportError(f"{name}: cannot listen: {exc.strerror or exc}") from exc
    if not stat.S_ISSOCK(st.st_mode):
        raise TransportError(f"{name}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a listener with a full backlog must not hold the caller (the event loop)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        if exc.errno != errno.EAGAIN:  # EAGAIN: someone listens, busy
            raise TransportError(f"{name}: cannot check existing socket: {exc.strerror}") from exc
    finally:
        probe.close()
    raise TransportError(f"{name}: another process is listening there")


def bind_unix(path: str, *, backlog: int = 128, mode: int | None = None,
              name: str | None = None) -> tuple[socket.socket, Any]:
    """A listening unix socket, and what to call to remove its file later; errors name it ``name`` (default:
    its ``unix:`` URI)."""
    ep = UnixEndpoint(path)
    name = name or ep.uri
    if not ep.abstract:
        _remove_stale(path, name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(ep.address)
        if mode is not None and not ep.abstract:
            os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise TransportError(f"{name}: cannot listen: {exc.strerror or exc}") from exc
    if ep.abstract:
        return sock, None
    try:
        ino = os.stat(path).st_ino
    except OSError as exc:  # removed or replaced at once by another process
        sock.close()
        raise TransportError(f"{name}: cannot listen: {exc.strerror or exc}") from exc

    def remove() -> None:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == ino:
                os.unlink(path)

    return sock, remove


def listen_unix(path: str, *, backlog: int = 128, mode: int | None = None) -> SocketListener:
    """Listen on ``path``; accepted peers are named ``unix:uid=U,pid=P``."""
    sock, remove = bind_unix(path, backlog=backlog, mode=mode)
    return SocketListener(sock, f"unix:{path}", unix_peer, on_close=remove)
