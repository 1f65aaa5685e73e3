"""The whole agent between two JetStream streams: guests publish to IN, signed events come out in OUT."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.js.errors
import orjson

from tests.helpers import ROOT, run_cli
from tests.nats.helpers import stream_messages
from tests.nats.server import NatsServer

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


async def _publish_guests(url: str, n: int, timeout: float = 20.0) -> None:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:  # the agent creates the stream when its listener starts
            try:
                await js.stream_info("IN")
                break
            except nats.js.errors.NotFoundError:
                if time.monotonic() > deadline:
                    raise AssertionError("the agent's listener did not create stream IN") from None
                await asyncio.sleep(0.05)
        for i in range(n):
            event = {"specversion": "1.0", "id": f"e{i}", "source": "guest://vm7/app", "type": "io.example.v1",
                     "data": {"i": i}}
            await js.publish("guests.vm7", orjson.dumps(event), headers=STRUCTURED)
    finally:
        await nc.close()


async def _wait_out(url: str, n: int, timeout: float = 20.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            msgs = await stream_messages(url, "OUT")
        except nats.js.errors.NotFoundError:
            msgs = []
        if len(msgs) >= n or time.monotonic() > deadline:
            return [m.data for m in msgs]
        await asyncio.sleep(0.1)


def test_agent_listens_on_one_stream_and_publishes_to_another(nats_server: NatsServer, tmp_path: Path) -> None:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        '[agent]\nhost_id = "edge.1"\nstate_dir = "state"\n'
        f'[[sinks]]\nuri = "{nats_server.url}/hoststamp.{{hostid}}.{{type}}"\ncreate_stream = "OUT"\n'
        '[[sinks]]\nuri = "file:out/events.ndjson"\n'
        f'[[listeners]]\nuri = "{nats_server.url}/guests.>?create=1&stream=IN"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg), "--probes", "none"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        asyncio.run(_publish_guests(nats_server.url, 50))
        bodies = asyncio.run(_wait_out(nats_server.url, 50))
        agent.send_signal(signal.SIGTERM)
        _out, err = agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
    assert agent.returncode == 0, err.decode()[-2000:]
    assert len(bodies) == 50
    events = [orjson.loads(b) for b in bodies]
    assert sorted(e["id"] for e in events) == sorted(f"e{i}" for i in range(50))
    assert {(e["hostid"], e["hostpeer"]) for e in events} == {("edge.1", "nats:guests.vm7")}
    (tmp_path / "from-nats.ndjson").write_bytes(b"\n".join(bodies) + b"\n")
    for path in ("from-nats.ndjson", "out/events.ndjson"):
        res = run_cli(["verify", path], cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
