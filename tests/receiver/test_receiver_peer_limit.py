"""``max_connections_per_peer``: one peer cannot take every place of a listener.

Over real unix sockets, with two real peers: this process (root) and a child
process that sends as uid 65534. A unix peer is its uid, so the child is
another peer however many connections this process holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agent import config
from agent.config import ListenerOptions
from agent.errors import ConfigError
from agent.receiver import MemoryDeliver, Receiver
from agent.transport import Ack, connect
from tests.receiver.test_receiver_server import Client, ev, run

T = TypeVar("T")
OTHER_UID = 65534


def _abstract() -> str:
    """A unix address any uid can connect to (an abstract socket has no file, hence no permission bits)."""
    return f"unix:@hoststamp-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"


#: a guest as another uid: it sends frames and prints each ack it reads, as a JSON line. It loads what it needs
#: before giving up root (the interpreter may be where that uid cannot read), then connects
_GUEST = """
import json, os, socket, struct, sys
uid, address, events = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
sock.connect("\\0" + address[1:])  # an abstract address, "@NAME"
sock.sendall(b"".join(struct.pack(">I", len(e.encode())) + e.encode() for e in events))
buf, count = b"", 0
while count < len(events):
    chunk = sock.recv(65536)
    if not chunk:
        sys.exit("closed before every frame was acked")
    buf += chunk
    while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
        n = struct.unpack(">I", buf[:4])[0]
        ack, buf = json.loads(buf[4 : 4 + n]), buf[4 + n :]
        print(json.dumps(ack), flush=True)
        count = ack["ack"]
"""


@pytest.fixture(scope="module")
def other_uid() -> int:
    if os.geteuid() != 0:
        pytest.skip("needs root, to run a child process as another uid")
    return OTHER_UID


async def _send_as(uid: int, uri: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """Send ``events`` to the abstract unix socket ``uri`` from a child process running as ``uid``; its acks."""
    assert uri.startswith("unix:@")
    args = [sys.executable, "-I", "-c", _GUEST, str(uid), uri[len("unix:"):],
            *(orjson.dumps(e).decode() for e in events)]
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    try:
        async with asyncio.timeout(15):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return [orjson.loads(line) for line in out.splitlines()]


async def _with_receiver(uri: str, body: Callable[[Receiver, MemoryDeliver], Awaitable[T]], **opts: Any) -> T:
    sink = MemoryDeliver()
    rx = Receiver.build(ListenerOptions(uri=uri, **opts), sink, drain_timeout=2.0)
    server = asyncio.ensure_future(rx.serve())
    try:
        return await body(rx, sink)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def _refused(uri: str) -> bool:
    """Whether a new connection is closed by the receiver at once, without a frame sent (bounded: an accepted one
    would wait for ``idle_timeout``)."""
    c = Client(await connect(uri))
    try:
        async with asyncio.timeout(5):
            return await c.closed()
    except TimeoutError:
        return False
    finally:
        await c.stream.aclose()


async def _connected(uri: str, i: int) -> Client:
    """A connection that has had a frame acked: the receiver holds it open."""
    c = Client(await connect(uri))
    await c.send(ev(i))
    assert await c.until(1) == Ack(1)
    return c


def test_a_peer_over_its_limit_is_refused_while_another_peer_still_connects(other_uid: int,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    """With ``max_connections_per_peer = 2`` and room for 3: this uid's third and fourth connections are refused
    (reason ``peer_connections``, logged once), the third place stays free, and another uid takes it."""
    uri = _abstract()

    async def body(rx: Receiver, sink: MemoryDeliver) -> tuple[Receiver, list[dict[str, Any]]]:
        mine = [await _connected(uri, i) for i in range(2)]
        for _ in range(2):
            assert await _refused(uri)
        acks = await _send_as(other_uid, uri, ev("other"))
        assert not any(c.stream.hung_up() for c in mine)  # this uid's first two are still served
        for c in mine:
            await c.stream.aclose()
        return rx, acks

    with caplog.at_level(logging.INFO, logger="agent.receiver"):
        rx, acks = run(_with_receiver(uri, body, max_connections=3, max_connections_per_peer=2), timeout=30)
    assert acks[-1] == {"ack": 1}
    assert rx.stats.rejected == {"peer_connections": 2}
    assert rx.stats.connections == 3
    logged = [r.getMessage() for r in caplog.records if "peer_connections" in r.getMessage()]
    assert len(logged) == 1 and f"unix:uid={os.getuid()}" in logged[0]


def test_the_other_peer_s_events_arrive_with_its_own_uid(other_uid: int) -> None:
    uri = _abstract()

    async def body(rx: Receiver, sink: MemoryDeliver) -> tuple[Receiver, MemoryDeliver]:
        mine = await _connected(uri, 0)
        assert await _refused(uri)
        assert (await _send_as(other_uid, uri, ev("a"), ev("b")))[-1] == {"ack": 2}
        await mine.stream.aclose()
        return rx, sink

    rx, sink = run(_with_receiver(uri, body, max_connections=4, max_connections_per_peer=1), timeout=30)
    assert rx.stats.rejected == {"peer_connections": 1}
    assert sink.ids() == ["id-0", "id-a", "id-b"]
    assert {p.split(",")[0] for _e, p in sink.got} == {f"unix:uid={os.getuid()}", f"unix:uid={other_uid}"}


def test_a_peer_s_place_is_released_when_its_connection_ends(tmp_path: Path) -> None:
    """The count is of open connections: one that ends gives its peer the place back."""
    uri = f"unix:{tmp_path / 'rx.sock'}"

    async def body(rx: Receiver, sink: MemoryDeliver) -> Receiver:
        first = await _connected(uri, 0)
        assert await _refused(uri)
        await first.stream.aclose()
        async with asyncio.timeout(5):  # the receiver sees the hang-up
            while rx.connections_of(f"unix:uid={os.getuid()},pid={os.getpid()}"):
                await asyncio.sleep(0.01)
        again = await _connected(uri, 1)
        await again.stream.aclose()
        return rx

    rx = run(_with_receiver(uri, body, max_connections=4, max_connections_per_peer=1))
    assert rx.stats.rejected == {"peer_connections": 1}
    assert rx.stats.connections == 2


def test_a_firecracker_socket_is_bounded_by_max_connections_alone(tmp_path: Path) -> None:
    """Every connection of a Firecracker socket comes from its one VM: ``max_connections_per_peer`` does not
    restrict them further."""
    uds = tmp_path / "fc.sock"
    uri = f"fcvsock:{uds}:5140"

    async def body(rx: Receiver, sink: MemoryDeliver) -> Receiver:
        clients = [await _connected(f"unix:{uds}_5140", i) for i in range(3)]
        assert await _refused(f"unix:{uds}_5140")  # the fourth is over max_connections
        for c in clients:
            await c.stream.aclose()
        return rx

    rx = run(_with_receiver(uri, body, name="vm-1", max_connections=3, max_connections_per_peer=1))
    assert rx.stats.rejected == {"connections": 1}


def test_what_one_peer_is_per_transport() -> None:
    unix = Receiver(ListenerOptions(uri="unix:/x"), MemoryDeliver())
    assert unix.peer_of("unix:uid=7,pid=100") == unix.peer_of("unix:uid=7,pid=200") == "unix:uid=7"
    assert unix.peer_of("unix:uid=8,pid=100") != unix.peer_of("unix:uid=7,pid=100")
    vsock = Receiver(ListenerOptions(uri="vsock:any:5140"), MemoryDeliver())
    assert vsock.peer_of("vsock:42") == "vsock:42" != vsock.peer_of("vsock:43")
    assert Receiver(ListenerOptions(uri="fcvsock:/x:1", name="vm"), MemoryDeliver()).peer_of("vm") is None


@pytest.mark.parametrize(("given", "limit"), [({}, 64), ({"max_connections": 10}, 2), ({"max_connections": 3}, 1),
                                              ({"max_connections_per_peer": 5}, 5),
                                              ({"max_connections": 4, "max_connections_per_peer": 4}, 4)])
def test_on_vsock_the_limit_defaults_to_a_quarter_of_max_connections(given: dict[str, int], limit: int) -> None:
    opts = config.parse({"listeners": [{"uri": "vsock:any:5140", **given}]}).listeners[0]
    assert opts.peer_connections == limit


@pytest.mark.parametrize(("given", "limit"), [({}, 256), ({"max_connections": 10}, 10),
                                              ({"max_connections_per_peer": 5}, 5)])
def test_on_unix_the_limit_is_only_what_is_configured(given: dict[str, int], limit: int) -> None:
    # the processes of a unix socket often share one uid (root in every container): no limit of its own unless set
    opts = config.parse({"listeners": [{"uri": "unix:/x", **given}]}).listeners[0]
    assert opts.peer_connections == limit


@pytest.mark.parametrize("given", [{"max_connections_per_peer": 0},
                                   {"max_connections": 8, "max_connections_per_peer": 9},
                                   {"max_connections_per_peer": 257}])
def test_the_limit_is_checked_with_the_config(given: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.max_connections_per_peer"):
        config.parse({"listeners": [{"uri": "unix:/x", **given}]})
