"""The sd_notify client against a real datagram socket, as systemd listens."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import Notifier, watchdog_period


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    s.bind(path)
    s.settimeout(5)
    yield s, path
    s.close()


def test_states_arrive_as_key_value_lines(manager: tuple[socket.socket, str]) -> None:
    srv, path = manager
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("running; 3 probes")
    assert srv.recv(4096) == b"READY=1\nSTATUS=running; 3 probes"
    assert n.watchdog()
    assert srv.recv(4096) == b"WATCHDOG=1"
    assert n.reloading()
    lines = srv.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=") and lines[1][15:].isdigit()
    assert n.stopping()
    assert srv.recv(4096) == b"STOPPING=1"
    n.close()


def test_abstract_namespace_address() -> None:
    name = f"hoststamp-test-{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(b"\0" + name.encode())
    srv.settimeout(5)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.status("hello")
        assert srv.recv(4096) == b"STATUS=hello"
        n.close()
    finally:
        srv.close()


def test_without_systemd_everything_is_a_no_op(tmp_path: Path) -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog()
    # a socket that went away: reported as not sent, never raised
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert gone.enabled and not gone.ready() and not gone.ready()
    assert not Notifier({"NOTIFY_SOCKET": "vsock:99:1"}).enabled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1234"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "999"}, None),  # meant for another process
    ],
)
def test_watchdog_period(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_period(env, pid=1234) == expected
