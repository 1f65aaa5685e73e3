"""At-least-once end to end: real agents in subprocesses, SIGKILL mid-stream, restarts; no id may be lost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.signing.keys import generate_keypair
from tests.delivery.agents import Agent, Sender, guest_events, ids_in, wait_for

pytestmark = pytest.mark.slow

#: a socket sink that reconnects quickly and notices a dead peer quickly
FAST_SOCKET = "backoff_initial = 0.05\nbackoff_max = 0.5\nack_timeout = 2.0\nsend_timeout = 5.0\n"


def _home(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys")
    return tmp_path


def receiver_b(home: Path) -> Agent:
    """B: listens on b.sock, writes what it takes to b.ndjson (acked only once fsynced there)."""
    return Agent(home, "b", f"""
[agent]
state_dir = "state-b"
drain_timeout = 5.0
[[sinks]]
uri = "file:{home}/b.ndjson"
[[listeners]]
uri = "unix:{home}/b.sock"
""", listen=home / "b.sock")


def forwarder_a(home: Path, spool: bool) -> Agent:
    """A: listens on a.sock, forwards to B over unix:b.sock, optionally through a disk spool."""
    extra = f'spool = "{home}/spool-a"\nspool_fsync = "batch"\n' if spool else ""
    return Agent(home, "a", f"""
[agent]
state_dir = "state-a"
drain_timeout = 2.0
[[sinks]]
uri = "unix:{home}/b.sock"
{extra}{FAST_SOCKET}
[[listeners]]
uri = "unix:{home}/a.sock"
""", listen=home / "a.sock")


def test_downstream_killed_twice_mid_stream_loses_nothing(tmp_path: Path) -> None:
    home = _home(tmp_path)
    b, a = receiver_b(home).start(), forwarder_a(home, spool=False).start()
    out = home / "b.ndjson"
    to = f"unix:{home}/a.sock"
    chunks = [range(k * 400, (k + 1) * 400) for k in range(5)]
    senders = [Sender(home, to, guest_events(chunks[0]), timeout=90)]
    try:
        for round_, stored in ((1, 100), (2, 900)):
            wait_for(lambda stored=stored: len(ids_in(out)) >= stored, 30, f"B to store {stored} events")
            b.kill()  # mid-stream: some events are in flight, unacked, or in B's queue
            senders.append(Sender(home, to, guest_events(chunks[2 * round_ - 1]), timeout=90))
            b.start()
            senders.append(Sender(home, to, guest_events(chunks[2 * round_]), timeout=90))
        for s in senders:
            rc, err = s.finish()
            assert rc == 0, err
        expected = {f"ev-{i}" for c in chunks for i in c}
        wait_for(lambda: expected <= ids_in(out), 30, "every id at B")
    finally:
        for s in senders:
            s.kill()
        a.stop()
        b.stop()
    assert b.starts == 3


def test_forwarder_killed_with_its_spool_on_loses_nothing(tmp_path: Path) -> None:
    home = _home(tmp_path)
    b, a = receiver_b(home).start(), forwarder_a(home, spool=True).start()
    out = home / "b.ndjson"
    try:
        to = f"unix:{home}/a.sock"
        assert Sender(home, to, guest_events(range(0, 500)), timeout=30).finish()[0] == 0
        wait_for(lambda: len(ids_in(out)) == 500, 30, "the first events at B")
        b.kill()  # B is gone: A can only keep the rest in its spool
        rc, err = Sender(home, to, guest_events(range(500, 2000)), timeout=30).finish()
        assert rc == 0, err  # acked by A as soon as they are durable in A's spool
        a.kill()
        assert len(ids_in(out)) < 2000
        b.start()
        a.start()
        wait_for(lambda: {f"ev-{i}" for i in range(2000)} <= ids_in(out), 60, "every id at B after A's restart")
        log = a.stop()
        assert "events left in the spool" in log
    finally:
        a.stop()
        b.stop()
    assert not list((home / "spool-a").glob("quarantine/*"))


def test_sigterm_with_a_sink_down_keeps_the_rest_in_the_spool_for_the_next_start(tmp_path: Path) -> None:
    home = _home(tmp_path)
    a = forwarder_a(home, spool=True).start()  # B is not running: nothing can be delivered
    out = home / "b.ndjson"
    rc, err = Sender(home, f"unix:{home}/a.sock", guest_events(range(300)), timeout=30).finish()
    assert rc == 0, err  # acked: durable in A's spool
    log = a.stop(timeout=15)  # drain_timeout is 2 s: the stop is bounded although the sink is down
    drops, _blocked = _summary(log)
    assert not drops and re.search(r"spooled=300\b", log), log
    b = receiver_b(home).start()
    a.start()
    try:
        wait_for(lambda: {f"ev-{i}" for i in range(300)} <= ids_in(out), 30, "the spooled events at B")
    finally:
        a.stop()
        b.stop()


_SUMMARY = re.compile(r"sink (\S+): sent=(\d+)((?: dropped\.\w+=\d+)*) blocked=(\d+) (queued|spooled)=(\d+)")


def _summary(log: str) -> tuple[dict[str, int], int]:
    m = _SUMMARY.search(log)
    assert m, log
    drops = {k: int(v) for k, v in re.findall(r"dropped\.(\w+)=(\d+)", m.group(3))}
    return drops, int(m.group(4))


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
@pytest.mark.parametrize("overflow", ["block", "drop_newest", "drop_oldest"])
def test_every_backpressure_policy_is_counted(tmp_path: Path, overflow: str, spool: bool) -> None:
    """A sink that never answers, a small queue (or spool), 600 guest events: each policy leaves its count."""
    home = _home(tmp_path)
    bound = 'spool = "spool"\nspool_max_bytes = 16384\n' if spool else ""
    a = Agent(home, "a", f"""
[agent]
state_dir = "state"
drain_timeout = 0.5
[[sinks]]
uri = "unix:{home}/nobody.sock"
queue_size = 20
batch_max = 10
overflow = "{overflow}"
max_unacked = 10
send_timeout = 0.2
ack_timeout = 0.3
{bound}
[[listeners]]
uri = "unix:{home}/a.sock"
""", listen=home / "a.sock").start()
    sender = Sender(home, f"unix:{home}/a.sock", guest_events(range(600)), timeout=1.5)
    try:
        rc, err = sender.finish(timeout=60)
        log = a.stop()
    finally:
        sender.kill()
        a.stop()
    drops, blocked = _summary(log)
    if overflow == "block":
        assert blocked >= 1 and not drops.get("queue_full") and not drops.get("evicted")
        assert rc != 0 and "not acknowledged" in err  # the sender timed out waiting for acks that cannot come
    elif overflow == "drop_newest":
        key = "spool_full" if spool else "queue_full"
        assert drops.get(key, 0) > 0 and "evicted" not in drops and blocked == 0
    else:
        assert drops.get("evicted", 0) > 0 and "queue_full" not in drops and "spool_full" not in drops
        assert blocked == 0
