"""The ``link`` probe against the real kernel: a veth pair between two network namespaces made here."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import schema
from agent.errors import ProbeError
from agent.model import Reading
from agent.probes import registry
from agent.probes.link import DEFAULT_INCLUDE, LinkOptions, LinkProbe, flag_names, link_output

pytestmark = pytest.mark.root

PACKETS = 40
PAYLOAD = 200

# a request/response exchange over UDP, run inside a namespace: the "ping" of this test
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.231.7.1", 7007))
s.settimeout(20)
for _ in range(int(sys.argv[1])):
    data, peer = s.recvfrom(4096)
    s.sendto(data, peer)
"""
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
n, size, got = int(sys.argv[1]), int(sys.argv[2]), 0
for i in range(n):
    for _attempt in range(5):
        s.sendto(bytes(size), ("10.231.7.1", 7007))
        try:
            s.recvfrom(4096)
            got += 1
            break
        except TimeoutError:
            pass
sys.exit(0 if got == n else 1)
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Pair:
    ns_a: str
    ns_b: str
    dev: str = "veth-hs0"
    peer: str = "veth-hs1"


@pytest.fixture
def pair() -> Iterator[Pair]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    p = Pair(f"hs-link-a-{os.getpid()}", f"hs-link-b-{os.getpid()}")
    try:
        ip("netns", "add", p.ns_a)
        ip("netns", "add", p.ns_b)
        ip("-n", p.ns_a, "link", "add", p.dev, "type", "veth", "peer", "name", p.peer, "netns", p.ns_b)
        # a second pair, both ends in ns_a, outside the default globs (this kernel has no dummy driver)
        ip("-n", p.ns_a, "link", "add", "xv-hs0", "type", "veth", "peer", "name", "xv-hs1")
        ip("-n", p.ns_a, "addr", "add", "10.231.7.1/30", "dev", p.dev)
        ip("-n", p.ns_b, "addr", "add", "10.231.7.2/30", "dev", p.peer)
        ip("-n", p.ns_a, "link", "set", p.dev, "up")
        ip("-n", p.ns_b, "link", "set", p.peer, "up")
        yield p
    finally:
        for ns in (p.ns_a, p.ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def traffic(p: Pair, n: int = PACKETS, size: int = PAYLOAD) -> None:
    server = subprocess.Popen(["ip", "netns", "exec", p.ns_a, sys.executable, "-c", ECHO, str(n)])
    try:
        # the server binds before the first datagram arrives or the client retries
        client = subprocess.run(["ip", "netns", "exec", p.ns_b, sys.executable, "-c", CLIENT, str(n), str(size)],
                                timeout=60)
        assert client.returncode == 0
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def collect(probe: LinkProbe) -> dict[str, Reading]:
    return {r.subject: r for r in asyncio.run(probe.collect())}


def test_registered_and_defaults() -> None:
    assert registry.get("link") is LinkProbe
    assert LinkOptions().include == DEFAULT_INCLUDE == ("tap*", "vnet*", "veth*", "fc-*")
    o = schema.build(LinkOptions, {"include": ["eth*"], "netns": "x"}, prefix="probes.link", file=None)
    assert o == LinkOptions(include=("eth*",), netns="x")


def test_counters_move_with_traffic(pair: Pair) -> None:
    probe = LinkProbe(LinkOptions(netns=pair.ns_a))
    first = collect(probe)
    assert list(first) == [pair.dev]  # lo and the xv-* pair are not included by default
    r = first[pair.dev]
    assert r.probe == "link" and r.error is None and r.probe_source == f"rtnetlink:{pair.ns_a}"
    out = r.output
    assert out["kind"] == "veth" and out["mtu"] == 1500 and out["deltas"] is None
    assert "UP" in out["flags"] and out["carrier"] is True
    traffic(pair)
    second = collect(probe)[pair.dev].output
    d = second["deltas"]
    assert d["rx_packets"] >= PACKETS and d["tx_packets"] >= PACKETS
    assert d["rx_bytes"] >= PACKETS * PAYLOAD and d["tx_bytes"] >= PACKETS * PAYLOAD
    assert d["rx_errors"] == 0 and d["tx_dropped"] == 0
    assert second["rx_packets"] == out["rx_packets"] + d["rx_packets"]
    assert second["operstate"] == "UP"


def test_link_down_is_seen(pair: Pair) -> None:
    ip("-n", pair.ns_a, "link", "set", pair.dev, "down")
    out = collect(LinkProbe(LinkOptions(netns=pair.ns_a)))[pair.dev].output
    assert out["operstate"] == "DOWN" and out["carrier"] is False and "UP" not in out["flags"]
    peer = collect(LinkProbe(LinkOptions(netns=pair.ns_b)))[pair.peer].output
    # the peer is still administratively up but has lost its carrier
    assert peer["operstate"] == "DOWN" and peer["carrier"] is False
    assert "UP" in peer["flags"] and "LOWER_UP" not in peer["flags"]


def test_include_exclude_and_recreated_link(pair: Pair) -> None:
    assert sorted(collect(LinkProbe(LinkOptions(netns=pair.ns_a, include=("*",))))) == [
        "lo", pair.dev, "xv-hs0", "xv-hs1"]
    assert collect(LinkProbe(LinkOptions(netns=pair.ns_a, exclude=("veth-hs*",)))) == {}
    probe = LinkProbe(LinkOptions(netns=pair.ns_a, include=("xv-*",)))
    before = collect(probe)["xv-hs0"].output
    assert before["operstate"] == "DOWN" and "UP" not in before["flags"]
    ip("-n", pair.ns_a, "link", "del", "xv-hs0")
    ip("-n", pair.ns_a, "link", "add", "xv-hs0", "type", "veth", "peer", "name", "xv-hs1")
    after = collect(probe)["xv-hs0"].output
    assert after["ifindex"] != before["ifindex"] and after["deltas"] is None


def test_unavailable_and_failing_namespace() -> None:
    missing = LinkOptions(netns=f"hs-none-{os.getpid()}")
    assert "does not exist" in (LinkProbe.unavailable(missing) or "")
    assert LinkProbe.unavailable(LinkOptions()) is None
    with pytest.raises(ProbeError, match="does not exist"):
        asyncio.run(LinkProbe(missing).collect())
    assert not os.path.exists(f"/run/netns/{missing.netns}")  # a probe never creates a namespace


def test_a_namespace_path_that_is_no_namespace_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    """A FIFO there would block the probe's round (and, in the watch, a thread) for ever."""
    os.mkfifo(tmp_path / "ns")
    fifo = LinkOptions(netns=str(tmp_path / "ns"))
    assert "is not a namespace file" in (LinkProbe.unavailable(fifo) or "")
    with pytest.raises(ProbeError, match="is not a namespace file"):
        asyncio.run(asyncio.wait_for(LinkProbe(fifo).collect(), 30))


def test_a_link_named_in_bytes_that_are_not_utf8_keeps_its_name() -> None:
    """pyroute2 hands such a name over as bytes: it is the name (matched by include), not its repr."""
    msg = FakeMsg({"index": 9, "flags": 0x1}, {"ifname": b"veth\xe9a", "stats": {}})
    name, _index, _out = link_output(msg)
    assert name == os.fsdecode(b"veth\xe9a") and name.startswith("veth")


class FakeMsg:
    """What pyroute2 hands over, reduced to the accessors link_output uses."""

    def __init__(self, fields: dict[str, Any], attrs: dict[str, Any]) -> None:
        self.fields, self.attrs = fields, attrs

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str) -> Any:
        return self.attrs.get(key)


def test_link_output_is_pure() -> None:
    msg = FakeMsg({"index": 7, "flags": 0x11043},
                  {"ifname": "tap0", "mtu": 9000, "operstate": "UNKNOWN", "carrier": 1,
                   "stats": {"rx_bytes": 10, "tx_bytes": 20, "rx_packets": 1, "tx_packets": 2}})
    name, index, out = link_output(msg)
    assert (name, index) == ("tap0", 7)
    assert out["flags"] == ["UP", "BROADCAST", "RUNNING", "MULTICAST", "LOWER_UP"]
    assert out["rx_bytes"] == 10 and out["rx_dropped"] == 0 and out["kind"] is None and out["carrier"] is True
    assert flag_names(0) == []


@pytest.mark.root
def test_an_agent_reading_links_in_a_namespace_keeps_running(pair: Pair, tmp_path: Path) -> None:
    """pyroute2 forks a child to open a socket in the namespace and ends it with SIGTERM: that signal is the
    child's, and the agent must not take it for its own."""
    import signal
    import time

    from tests.helpers import ROOT, run_cli

    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    (tmp_path / "c.toml").write_text(f'[probes.link]\nnetns = "{pair.ns_a}"\ninterval = 0.2\ninclude = ["*"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", "c.toml", "--probes", "link",
                             "--sink", "file:out.ndjson"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE)
    try:
        out = tmp_path / "out.ndjson"

        def lines() -> int:
            return len(out.read_bytes().splitlines()) if out.exists() else 0

        # rounds every 0.2 s, each opening a namespace socket: the agent still runs after many of them (a loaded
        # machine may take a while to start it and to make the rounds, hence a poll and not a fixed window)
        deadline = time.monotonic() + 60
        while lines() < 20:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""  # still running
            assert time.monotonic() < deadline, f"{lines()} lines in 60 s"
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert b"received SIGINT" in err and b"received SIGTERM" not in err
