"""Firecracker hybrid vsock, end to end, against a small Firecracker-style muxer.

The muxer plays Firecracker's part on the host: it listens on ``UDS``; a host
connection that writes ``CONNECT P\\n`` is joined to whatever the guest listens
on at port ``P`` (here: a unix socket standing in for the guest) after an
``OK <n>\\n`` reply; and :meth:`FcMuxer.guest_connect` makes the connection
Firecracker makes to ``UDS_P`` when the guest dials host port ``P``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agent.config import ListenerOptions
from agent.errors import TransportError
from agent.model import Event
from agent.receiver import MemoryDeliver, Receiver
from agent.sinks.base import SinkContext
from agent.sinks.socket import FcVsockSink, SocketOptions, UnixSink
from agent.transport import connect, listen
from agent.transport.fcvsock import parse_handshake_reply

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


class FcMuxer:
    def __init__(self, uds: Path, guest_ports: dict[int, Path]) -> None:
        self.uds = uds
        self.guest_ports = guest_ports
        self._local_ports = itertools.count(1073741824)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.server: asyncio.AbstractServer | None = None
        self.reply: bytes | None = None  # override the OK line (to test bad replies)

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._host_conn, str(self.uds))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _host_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        parts = line.split()
        target = self.guest_ports.get(int(parts[1])) if len(parts) == 2 and parts[0] == b"CONNECT" else None
        if target is None:
            writer.close()  # Firecracker closes when nobody listens on that port
            return
        g_reader, g_writer = await asyncio.open_unix_connection(str(target))
        writer.write(self.reply if self.reply is not None else f"OK {next(self._local_ports)}\n".encode())
        await writer.drain()
        self._join(reader, writer, g_reader, g_writer)

    def _join(self, r1: asyncio.StreamReader, w1: asyncio.StreamWriter, r2: asyncio.StreamReader,
              w2: asyncio.StreamWriter) -> None:
        for t in (asyncio.ensure_future(_pump(r1, w2)), asyncio.ensure_future(_pump(r2, w1))):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def guest_connect(self, port: int, guest_side: Path) -> None:
        """The guest dials host ``port``: bridge its local socket ``guest_side`` to ``UDS_port``."""

        async def on_guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            h_reader, h_writer = await asyncio.open_unix_connection(f"{self.uds}_{port}")
            self._join(reader, writer, h_reader, h_writer)

        server = await asyncio.start_unix_server(on_guest, str(guest_side))
        self._tasks.add(asyncio.ensure_future(server.serve_forever()))


def events(n: int, prefix: str = "e") -> list[Event]:
    out = []
    for i in range(n):
        body = orjson.dumps({"specversion": "1.0", "id": f"{prefix}-{i}", "source": "host://h/probe",
                             "type": "io.hoststamp.host.v1.cgroup", "data": {"i": i}})
        out.append(Event(f"{prefix}-{i}", "host://h/probe", "io.hoststamp.host.v1.cgroup", i, body))
    return out


def test_host_initiated_sink_reaches_the_guest_listener(tmp_path: Path) -> None:
    """--sink fcvsock:UDS:52 -> muxer -> guest listening on port 52."""
    uds, guest_sock = tmp_path / "v.sock", tmp_path / "guest-52.sock"

    async def main() -> list[tuple[str, str]]:
        mux = FcMuxer(uds, {52: guest_sock})
        await mux.start()
        rec = MemoryDeliver()
        guest = Receiver.build(ListenerOptions(uri=f"unix:{guest_sock}"), rec)
        serving = asyncio.ensure_future(guest.serve())
        sink = FcVsockSink(f"{uds}:52", SocketOptions(backoff_initial=0.01), SinkContext())
        await sink.open()
        await sink.send(events(20))
        await sink.flush()
        await sink.aclose()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await mux.stop()
        return [(e["id"], p) for e, p in rec.got]

    got = run(main())
    assert [i for i, _p in got] == [f"e-{i}" for i in range(20)]


def test_guest_initiated_connections_are_named_by_the_listener(tmp_path: Path) -> None:
    """guest sink -> muxer -> UDS_1024 <- --listen fcvsock:UDS:1024 with name = "vm-7"."""
    uds, guest_side = tmp_path / "v.sock", tmp_path / "guest-dials-host.sock"

    async def main() -> tuple[list[tuple[str, str]], Receiver]:
        mux = FcMuxer(uds, {})
        await mux.start()
        rec = MemoryDeliver()
        host = Receiver.build(replace(ListenerOptions(uri=f"fcvsock:{uds}:1024"), name="vm-7"), rec)
        serving = asyncio.ensure_future(host.serve())
        assert (tmp_path / "v.sock_1024").exists()
        await mux.guest_connect(1024, guest_side)
        sink = UnixSink(str(guest_side), SocketOptions(backoff_initial=0.01), SinkContext())
        await sink.send(events(5, "g"))
        await sink.flush()
        await sink.aclose()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await mux.stop()
        return [(e["id"], p) for e, p in rec.got], host

    got, _host = run(main())
    assert got == [(f"g-{i}", "vm-7") for i in range(5)]
    assert not (tmp_path / "v.sock_1024").exists()


def test_unnamed_fc_listener_names_peers_by_its_uri(tmp_path: Path) -> None:
    async def main() -> str:
        lst = listen(f"fcvsock:{tmp_path}/v.sock:9")
        client = await connect(f"unix:{tmp_path}/v.sock_9")
        server = await lst.accept()
        await client.aclose()
        await server.aclose()
        await lst.aclose()
        return server.peer

    assert run(main()) == f"fcvsock:{tmp_path}/v.sock:9"


def test_nobody_on_the_guest_port_and_bad_replies(tmp_path: Path) -> None:
    uds, guest_sock = tmp_path / "v.sock", tmp_path / "g.sock"

    async def main() -> None:
        mux = FcMuxer(uds, {52: guest_sock})
        await mux.start()
        lst = listen(f"unix:{guest_sock}")
        with pytest.raises(TransportError, match="without answering OK to CONNECT"):
            await connect(f"fcvsock:{uds}:53")
        mux.reply = b"NO 1\n"
        with pytest.raises(TransportError, match="unexpected Firecracker handshake reply"):
            await connect(f"fcvsock:{uds}:52")
        mux.reply = b"OK 77\nearly bytes"
        stream = await connect(f"fcvsock:{uds}:52")
        assert await stream.receive() == b"early bytes"  # bytes after the OK line are not lost
        await stream.aclose()
        await lst.aclose()
        await mux.stop()

    run(main())


@pytest.mark.parametrize(("line", "port"), [(b"OK 1073741824\n", 1073741824), (b"OK 5\r\n", 5)])
def test_handshake_reply(line: bytes, port: int) -> None:
    assert parse_handshake_reply(line) == port


@pytest.mark.parametrize("line", [b"OK\n", b"OK x\n", b"ERR 5\n", b"OK 5 6\n", b""])
def test_bad_handshake_reply(line: bytes) -> None:
    with pytest.raises(TransportError):
        parse_handshake_reply(line)


def test_a_handshake_cancelled_midway_closes_its_socket(tmp_path: Path) -> None:
    """A sender that stops while Firecracker has not answered yet must not leave the connection open."""
    from agent.transport.fcvsock import connect_fcvsock
    from agent.transport.uri import FcVsockEndpoint

    uds = tmp_path / "v.sock"

    async def main() -> bytes:
        lst = listen(f"unix:{uds}")
        dialing = asyncio.ensure_future(connect_fcvsock(FcVsockEndpoint(str(uds), 52)))
        fc = await lst.accept()
        assert await fc.receive() == b"CONNECT 52\n"  # and no answer
        dialing.cancel()
        await asyncio.gather(dialing, return_exceptions=True)
        try:
            async with asyncio.timeout(5):
                return await fc.receive()  # b"" once the dialer closed its end
        finally:
            await fc.aclose()
            await lst.aclose()

    assert run(main()) == b""


def test_a_listener_that_cannot_listen_names_its_uri_and_its_socket_file(tmp_path: Path) -> None:
    """What is wrong is said of the URI as configured (what the user can find in the configuration), and of
    the file ``UDS_PORT`` Firecracker connects to (what is wrong with it)."""
    from agent.transport.uri import FcVsockEndpoint

    (tmp_path / "v.sock_7").write_bytes(b"")
    long_uds = f"{tmp_path}/{'u' * 120}"
    cases: list[tuple[str | FcVsockEndpoint, str, str]] = [
        (f"fcvsock:{tmp_path}/nodir/v.sock:52", f"{tmp_path}/nodir/v.sock_52",
         "cannot listen: No such file or directory"),
        (f"fcvsock:{tmp_path}/v.sock:7", f"{tmp_path}/v.sock_7", "exists and is not a socket"),
        (FcVsockEndpoint(long_uds, 9), f"{long_uds}_9", "cannot listen: "),  # not checked by the URI parser
        # a file where a directory of the path should be
        (f"fcvsock:{tmp_path}/v.sock_7/v.sock:8", f"{tmp_path}/v.sock_7/v.sock_8", "cannot listen: Not a directory"),
    ]
    for target, path, reason in cases:
        uri = target if isinstance(target, str) else target.uri
        with pytest.raises(TransportError) as info:
            listen(target)
        assert str(info.value).startswith(f"{uri} (socket {path}): {reason}"), str(info.value)
        assert f"unix:{path}" not in str(info.value)  # said once, not twice
