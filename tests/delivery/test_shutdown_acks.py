"""SIGTERM while a guest is sending: what the agent took is acknowledged before the connection closes."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import orjson

from agent.signing.keys import generate_keypair
from tests.delivery.agents import Agent, guest_events, ids_in


def test_a_guest_gets_the_ack_of_every_event_the_agent_wrote_before_it_stopped(tmp_path: Path) -> None:
    """At-least-once allows copies, but a shutdown should not make them: the events the listener took are
    delivered during the drain and acknowledged as they are; only what it had not taken is sent again."""
    generate_keypair(tmp_path / "keys")
    sock, out = tmp_path / "in.sock", tmp_path / "out.ndjson"
    agent = Agent(tmp_path, "a", f'[[listeners]]\nuri = "unix:{sock}"\n[[sinks]]\nuri = "file:{out}"\n',
                  listen=sock).start()
    acked = [0]
    frames = [orjson.dumps(orjson.loads(line)) for line in guest_events(range(20_000)).splitlines()]
    try:
        guest = socket.socket(socket.AF_UNIX)
        guest.settimeout(20)
        guest.connect(str(sock))

        def read_acks() -> None:
            buf = b""
            try:
                while chunk := guest.recv(1 << 16):
                    buf += chunk
                    while len(buf) >= 4 and len(buf) >= 4 + (n := struct.unpack(">I", buf[:4])[0]):
                        acked[0] = max(acked[0], orjson.loads(buf[4:4 + n])["ack"])
                        buf = buf[4 + n:]
            except OSError:  # reset: the host closed with frames of ours it never read
                pass

        reader = threading.Thread(target=read_acks)
        reader.start()
        sender = threading.Thread(target=_send_all, args=(guest, frames))
        sender.start()
        while not out.exists() or out.stat().st_size == 0:  # the agent is taking events
            time.sleep(0.001)
        log = agent.stop()
        reader.join(20)
        sender.join(20)
        guest.close()
    finally:
        agent.stop()
    written = ids_in(out)
    assert written, log
    # every event written was acknowledged (none is sent again), and nothing was acknowledged unwritten
    assert acked[0] == len(written), (acked[0], len(written), log)
    assert written == {f"ev-{i}" for i in range(len(written))}


def _send_all(guest: socket.socket, frames: list[bytes]) -> None:
    try:
        guest.sendall(b"".join(struct.pack(">I", len(f)) + f for f in frames))
    except OSError:  # the host stopped reading and closed
        pass
