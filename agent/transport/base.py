"""The two small interfaces every transport implements: a byte stream and a listener.

Transports move bytes and nothing else: no frames, no events. A stream knows
the peer as the receiver stamps it (``hostpeer``): ``unix:uid=U,pid=P`` from
SO_PEERCRED, ``vsock:CID`` from accept, or a configured name for a Firecracker
socket. Every failure surfaces as :class:`~agent.errors.TransportError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

__all__ = ["RECEIVE_SIZE", "ByteStream", "Dialer", "Listener"]

#: bytes asked for per receive; many small frames arrive in one call
RECEIVE_SIZE = 1 << 16


class ByteStream(ABC):
    """One connected, ordered, reliable byte stream."""

    #: who is at the other end, in ``hostpeer`` form
    peer: str

    @abstractmethod
    async def receive(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the peer has closed its side."""

    @abstractmethod
    async def send(self, data: bytes) -> None:
        """Write all of ``data``, waiting while the peer is slow to read."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close both directions; never raises."""

    def hung_up(self) -> bool:
        """Whether the peer is gone both ways (closed, not only done sending): nothing sent to it can arrive.
        False when the transport cannot tell."""
        return False


class Listener(ABC):
    """A bound, listening endpoint that hands out accepted streams."""

    #: the endpoint URI this listens on
    address: str

    @abstractmethod
    async def accept(self) -> ByteStream:
        """The next connection (cancel the call to stop waiting)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop listening and release the address; never raises."""


#: makes a new connection to a fixed endpoint (what a sender reconnects with)
Dialer = Callable[[], Awaitable[ByteStream]]
