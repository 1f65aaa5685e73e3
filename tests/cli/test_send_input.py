"""``hoststamp send``'s standard input: a byte order mark before the first line, and lines that are not UTF-8."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.config import ListenerOptions
from agent.receiver import MemoryDeliver, Receiver
from agent.transport import SendReport
from tests.helpers import ROOT, run_cli
from tests.receiver.test_receiver_send import send_to_receiver

BOM = b"\xef\xbb\xbf"


def line(i: int, **over: Any) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": f"s-{i}", "source": "guest://x", "type": "t.v1", **over})


def send(tmp_path: Path, data: bytes, **kw: Any) -> tuple[SendReport, list[str]]:
    return send_to_receiver(tmp_path, data, **kw)


@pytest.mark.parametrize("chunk", [1, 2, 4, 1 << 16])
def test_a_byte_order_mark_before_the_first_line_is_skipped(tmp_path: Path, chunk: int) -> None:
    """However the reads split the mark, it is skipped, and the first line is sent without it."""
    data = BOM + line(1) + b"\n" + line(2) + b"\n"
    report, ids = send(tmp_path, data, read=lambda f, n: f.read(min(n, chunk)))
    assert report.ok, report.problems
    assert (report.lines, report.sent, report.acked) == (2, 2, 2)
    assert ids == ["s-1", "s-2"]


def test_a_byte_order_mark_anywhere_else_is_not_skipped(tmp_path: Path) -> None:
    data = BOM + b"\n" + BOM + line(2) + b"\n" + line(3)
    report, ids = send(tmp_path, data)
    assert [n for n, _r in report.problems] == [2]
    assert report.problems[0][1] == "starts with a byte order mark (one is skipped only before the first line)"
    assert ids == ["s-3"]


def test_a_byte_order_mark_on_its_own_or_cut_short_is_no_line_or_a_bad_one(tmp_path: Path) -> None:
    assert send(tmp_path, BOM)[0].ok
    report, _ids = send(tmp_path, BOM[:2])
    assert report.problems == [(1, "not valid UTF-8 (byte 0xef at offset 0 of the line)")]


@pytest.mark.parametrize(("bad", "offset", "byte"), [
    (line(1, data="caf\xe9").replace(b"\xc3\xa9", b"\xe9"), None, 0xE9),  # Latin-1, not UTF-8
    (line(1, data="x") + b"\xff", None, 0xFF),
    (line(1, data="x").replace(b'"x"', b'"\xed\xa0\x80"'), None, 0xED),  # an encoded surrogate
    (b"\x80", 0, 0x80),
], ids=["latin-1", "after-the-object", "encoded-surrogate", "continuation-byte"])
def test_a_line_that_is_not_utf8_is_reported_as_such(tmp_path: Path, bad: bytes, offset: int | None,
                                                     byte: int) -> None:
    where = bad.index(bytes([byte])) if offset is None else offset
    report, ids = send(tmp_path, line(0) + b"\n" + bad + b"\n" + line(2) + b"\n")
    assert report.problems == [(2, f"not valid UTF-8 (byte 0x{byte:02x} at offset {where} of the line)")]
    assert ids == ["s-0", "s-2"]


def test_valid_utf8_that_is_not_json_is_still_not_json(tmp_path: Path) -> None:
    report, _ids = send(tmp_path, '{"id": "é"'.encode() + b"\n")
    assert len(report.problems) == 1 and report.problems[0][1].startswith("not JSON: ")


@contextlib.contextmanager
def receiver_thread(path: Path) -> Iterator[MemoryDeliver]:
    """A receiver on ``unix:PATH``, served from a thread of its own while the block runs."""
    got = MemoryDeliver()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    serving: list[asyncio.Future[Any]] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        rx = Receiver.build(ListenerOptions(uri=f"unix:{path}"), got)
        serving.append(loop.create_task(rx.serve()))
        loop.call_soon(ready.set)
        loop.run_until_complete(asyncio.gather(*serving, return_exceptions=True))

    t = threading.Thread(target=main, daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        yield got
    finally:
        loop.call_soon_threadsafe(serving[0].cancel)
        t.join(10)
        loop.close()


def test_send_skips_the_mark_and_names_the_line_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "rx.sock"
    stdin = BOM + line(1) + b"\n" + b'{"id":"\xff"}\n' + line(3) + b"\n"
    with receiver_thread(path) as got:
        res = run_cli(["send", "--to", f"unix:{path}", "--timeout", "10"], cwd=tmp_path, stdin=stdin)
    assert res.returncode == 1
    assert res.stderr.decode().splitlines() == [
        "hoststamp send: line 2: not valid UTF-8 (byte 0xff at offset 7 of the line)",
        f"hoststamp send: 2 of 2 events acknowledged by unix:{path}"]
    assert got.ids() == ["s-1", "s-3"]


def test_a_bad_line_is_said_at_once_while_the_host_is_away(tmp_path: Path) -> None:
    """With no host to send to and no ``--timeout``, ``send`` may wait long: what it cannot send is said when it
    is read, not only at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "agent", "send", "--to", f"unix:{tmp_path}/nobody.sock"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    try:
        proc.stdin.write(line(1) + b"\nnot json\n")
        proc.stdin.flush()  # the input stays open: send is still running, waiting for a host
        said, deadline = b"", time.monotonic() + 20
        while b"line 2: not JSON" not in said and time.monotonic() < deadline and proc.poll() is None:
            said += proc.stderr.read() or b""
            time.sleep(0.05)
        assert b"hoststamp send: line 2: not JSON" in said, said
        assert proc.poll() is None  # said before the end
    finally:
        proc.kill()
        proc.wait()
