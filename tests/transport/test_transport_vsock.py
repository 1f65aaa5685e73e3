"""AF_VSOCK listener: bind, listen and accept with a timeout only (never connect anywhere)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agent.errors import TransportError
from agent.transport import listen, vsock_available
from agent.transport.vsock import vsock_peer

pytestmark = pytest.mark.skipif(not vsock_available(), reason="AF_VSOCK not available")


def _free_port() -> int:
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    with s:
        s.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        return int(s.getsockname()[1])


def test_listen_any_and_accept_times_out() -> None:
    port = _free_port()

    async def main() -> str:
        lst = listen(f"vsock:any:{port}")
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(lst.accept(), 0.2)
            return lst.address
        finally:
            await lst.aclose()

    assert asyncio.run(main()) == f"vsock:any:{port}"


def test_port_in_use_is_a_transport_error() -> None:
    port = _free_port()

    async def main() -> None:
        lst = listen(f"vsock:any:{port}")
        try:
            with pytest.raises(TransportError, match="cannot listen"):
                listen(f"vsock:any:{port}")
        finally:
            await lst.aclose()

    asyncio.run(main())


def test_peer_name_comes_from_the_accepted_address() -> None:
    assert vsock_peer(None, (42, 1234)) == "vsock:42"  # type: ignore[arg-type]
