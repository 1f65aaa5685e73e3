"""Public names of the framing, transport and receiver packages, and error translation at the socket edge."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path

import pytest

import agent.codec.framing
import agent.receiver
import agent.transport
from agent.errors import TransportError
from agent.transport import connect, listen


@pytest.mark.parametrize("pkg", [agent.codec.framing, agent.transport, agent.receiver])
def test_all_is_complete_and_importable(pkg: types.ModuleType) -> None:
    names = pkg.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(pkg, name), name
    public = {n for n, v in vars(pkg).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    public -= {"annotations"}
    assert public <= set(names)


def test_os_errors_of_a_dead_peer_surface_as_transport_errors(tmp_path: Path) -> None:
    async def main() -> None:
        lst = listen(f"unix:{tmp_path}/p.sock")
        client = await connect(f"unix:{tmp_path}/p.sock")
        server = await lst.accept()
        await server.aclose()
        with pytest.raises(TransportError):
            for _ in range(1000):  # the first writes may land in the kernel buffer before the reset is seen
                await client.send(b"x" * 65536)
        await client.aclose()
        await lst.aclose()

    asyncio.run(asyncio.wait_for(main(), 10))
