"""Unix stream sockets for real: peer credentials, stale files, abstract names, close."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.errors import TransportError
from agent.transport import connect, listen, peer_credentials

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_round_trip_and_peer_credentials(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")

    async def main() -> tuple[str, bytes, bytes]:
        lst = listen(f"unix:{path}")
        client = await connect(f"unix:{path}")
        server = await lst.accept()
        await client.send(b"ping")
        got = await server.receive()
        await server.send(b"pong")
        back = await client.receive()
        await client.aclose()
        eof = await server.receive()
        assert eof == b""
        await server.aclose()
        await lst.aclose()
        return server.peer, got, back

    peer, got, back = run(main())
    assert peer == f"unix:uid={os.getuid()},pid={os.getpid()}"
    assert (got, back) == (b"ping", b"pong")
    assert not os.path.exists(path)


def test_peer_credentials_of_a_socketpair() -> None:
    a, b = socket.socketpair()
    with a, b:
        pid, uid, gid = peer_credentials(a)
    assert (pid, uid, gid) == (os.getpid(), os.getuid(), os.getgid())


def test_stale_socket_is_replaced_and_live_one_is_not(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # file left behind, nobody listening

    async def main() -> None:
        lst = listen(f"unix:{path}")
        with pytest.raises(TransportError, match="another process is listening"):
            listen(f"unix:{path}")
        await lst.aclose()

    run(main())


def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    with pytest.raises(TransportError, match="not a socket"):
        listen(f"unix:{path}")
    assert path.read_text() == "keep me"


def test_socket_mode(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"

    async def main() -> int:
        lst = listen(f"unix:{path}", mode=0o660)
        mode = path.stat().st_mode & 0o777
        await lst.aclose()
        return mode

    assert run(main()) == 0o660


def test_abstract_namespace() -> None:
    name = f"@hoststamp-test-{os.getpid()}"

    async def main() -> bytes:
        lst = listen(f"unix:{name}")
        client = await connect(f"unix:{name}")
        server = await lst.accept()
        await client.send(b"x")
        got = await server.receive()
        for s in (client, server):
            await s.aclose()
        await lst.aclose()
        return got

    assert run(main()) == b"x"


def test_connect_to_nothing_is_a_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="cannot connect"):
        run(connect(f"unix:{tmp_path / 'missing.sock'}"))


def test_close_leaves_a_replacement_socket_alone(tmp_path: Path) -> None:
    path = tmp_path / "r.sock"

    async def main() -> None:
        lst = listen(f"unix:{path}")
        os.unlink(path)
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(str(path))
        await lst.aclose()
        assert path.exists()
        other.close()

    run(main())


def test_no_free_descriptor_is_a_transport_error_not_an_os_error(tmp_path: Path) -> None:
    """A sender reconnects on TransportError; any other exception would end its task for good."""
    import resource

    async def main() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest = os.open("/dev/null", os.O_RDONLY)
        os.close(lowest)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))  # the next socket() fails with EMFILE
        try:
            with pytest.raises(TransportError, match="cannot connect"):
                await connect(f"unix:{tmp_path / 'x.sock'}")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    run(main())


def test_checking_a_live_socket_with_a_full_backlog_does_not_block(tmp_path: Path) -> None:
    """listen() runs in the event loop: probing a busy listener must answer at once, not wait to be accepted."""
    import threading

    path = str(tmp_path / "busy.sock")
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(path)
    busy.listen(0)
    waiting: list[socket.socket] = []
    try:
        while True:  # fill the backlog: nobody accepts
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            waiting.append(c)
            try:
                c.connect(path)
            except BlockingIOError:
                break
        outcome: list[BaseException | None] = []

        def probe() -> None:
            try:
                listen(f"unix:{path}")
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(5)
        assert outcome and isinstance(outcome[0], TransportError)
        assert "another process is listening" in str(outcome[0])
    finally:
        busy.close()  # lets a blocked probe go on
        for c in waiting:
            c.close()
