"""What the transports say when a peer gets them wrong: NDJSON where frames belong, a Firecracker socket that
closes instead of answering CONNECT, and a connect failure whose cause changes while retrying."""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agent.codec.framing import LengthPrefixedDecoder, encode_frame
from agent.codec.framing.length import looks_like_json_text
from agent.config import ListenerOptions
from agent.errors import FramingError, TransportError
from agent.receiver import MemoryDeliver, Receiver
from agent.transport import AckedSender, Backoff, ByteStream, FcVsockEndpoint, connect, decode_ack
from agent.transport.ack import Ack, encode_ack
from agent.transport.fcvsock import connect_fcvsock

T = TypeVar("T")

EVENT = orjson.dumps({"specversion": "1.0", "id": "id-1", "source": "guest://vm/app", "type": "io.example.v1"})


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.mark.parametrize("header", [b'{"sp', b"[{\"s", b" {\"s", b"\n{\"s", b"\r\n{\"", b"\t[1,"])
@pytest.mark.parametrize("whole", [False, True], ids=["next_frame", "frames"])
def test_a_refused_header_that_reads_as_json_text_says_so(header: bytes, whole: bool) -> None:
    dec = LengthPrefixedDecoder()
    dec.feed(header + b'pecversion":"1.0"}\n')
    with pytest.raises(FramingError) as err:
        dec.frames() if whole else dec.next_frame()
    msg = str(err.value)
    assert msg.startswith(f"declared frame length {struct.unpack('>I', header)[0]} exceeds the maximum of ")
    assert f"; header {header!r} looks like JSON text" in msg
    assert "frames start with a 4-byte big-endian length; NDJSON goes to `hoststamp send`" in msg
    assert len("frame: " + msg) <= 200  # whole in an ack


@pytest.mark.parametrize("header", [b"\x7f\xff\xff\xff", b"{\x00\x00\x01", b"    ", b"\r\n\r\n", b"GET ", b"\xff{\"s"])
def test_a_refused_header_that_is_not_json_text_says_nothing_of_json(header: bytes) -> None:
    assert not looks_like_json_text(header)
    dec = LengthPrefixedDecoder()
    dec.feed(header)
    with pytest.raises(FramingError, match=r"^declared frame length [0-9]+ exceeds the maximum of 1048576$"):
        dec.frames()


def test_an_accepted_length_is_not_refused_however_it_reads() -> None:
    """A large enough maximum takes ``{"sp`` as a length: the hint is only ever part of a refusal."""
    dec = LengthPrefixedDecoder(0x7B227370)
    dec.feed(b'{"specversion"')
    assert dec.frames() == [] and dec.buffered == 14


async def _read_acks(stream: ByteStream) -> list[str]:
    """Every refusal the receiver reports before it closes the connection."""
    dec = LengthPrefixedDecoder()
    refused: list[str] = []
    while chunk := await stream.receive():
        dec.feed(chunk)
        refused.extend(r for f in dec.frames() for _n, r in decode_ack(f).rejected)
    return refused


def test_a_client_sending_ndjson_to_a_listener_is_told_frames_are_length_prefixed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The connection closes with reason ``frame`` (counted, logged once per channel) as for any bad header, and
    the refusal says what the bytes look like and what a frame is."""
    path = tmp_path / "rx.sock"

    async def main() -> tuple[list[list[str]], Receiver, MemoryDeliver]:
        got = MemoryDeliver()
        rx = Receiver.build(ListenerOptions(uri=f"unix:{path}"), got)
        serving = asyncio.ensure_future(rx.serve())
        try:
            answers = []
            for _ in range(2):
                stream = await connect(f"unix:{path}")
                await stream.send(encode_frame(EVENT) + EVENT + b"\n" + EVENT + b"\n")
                answers.append(await _read_acks(stream))
                await stream.aclose()
            return answers, rx, got
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    with caplog.at_level(logging.INFO, logger="agent.receiver"):
        answers, rx, got = run(main())
    assert got.ids() == ["id-1"]  # the frame before the text was taken (and its copy on the second connection)
    for refused in answers:
        (reason,) = refused
        assert reason.startswith("frame: declared frame length 2065855344 exceeds the maximum of 1048576; ")
        assert "looks like JSON text" in reason and "4-byte big-endian length" in reason
    assert rx.stats.rejected == {"frame": 2}
    logged = [r.getMessage() for r in caplog.records if "looks like JSON text" in r.getMessage()]
    assert len(logged) == 1, logged  # once per channel and reason, however many connections


async def _refusing_muxer(uds: Path, partial: bytes = b"") -> asyncio.AbstractServer:
    """A Firecracker socket with nothing in the guest listening: it reads ``CONNECT P`` and closes (after
    ``partial`` of a reply, when given)."""

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        if partial:
            writer.write(partial)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(conn, str(uds))


def test_a_firecracker_socket_that_closes_instead_of_answering_connect_is_named_as_such(tmp_path: Path) -> None:
    uds = tmp_path / "v.sock"
    ep = FcVsockEndpoint(str(uds), 5150)

    async def main() -> list[str]:
        out = []
        for partial in (b"", b"OK 10"):
            server = await _refusing_muxer(uds, partial)
            try:
                with pytest.raises(TransportError) as err:
                    await connect_fcvsock(ep, timeout=2)
                out.append(str(err.value))
            finally:
                server.close()
                await server.wait_closed()
        return out

    nothing, cut = run(main())
    assert nothing == (f"{ep.uri}: the Firecracker socket closed the connection without answering OK to "
                       "CONNECT 5150 (nothing in the guest listening on port 5150, say)")
    assert cut == (f"{ep.uri}: the Firecracker socket closed the connection in the middle of its answer to "
                   "CONNECT 5150: b'OK 10'")


def test_a_connect_failure_is_warned_again_when_its_cause_changes_and_only_then(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Refused CONNECTs, then the socket file gone, then refused again: one warning per cause in a row, however
    many retries each, so the log never shows a cause that no longer holds."""
    uds = tmp_path / "v.sock"
    ep = FcVsockEndpoint(str(uds), 5150)
    attempts: list[str] = []

    async def main() -> None:
        async def dial() -> ByteStream:
            attempts.append("x")
            return await connect_fcvsock(ep, timeout=1)

        sender: AckedSender[bytes] = AckedSender(dial, lambda b: b, name=ep.uri, backoff=Backoff(0.001, 0.005))
        await sender.put([EVENT])

        async def failures(n: int) -> None:
            start = sender.stats.connect_failures
            while sender.stats.connect_failures < start + n:
                await asyncio.sleep(0.005)

        server = await _refusing_muxer(uds)
        await failures(5)
        uds.unlink()  # Firecracker gone: no socket file (removed first, so no connect is refused meanwhile)
        server.close()
        await server.wait_closed()
        await failures(5)
        server = await _refusing_muxer(uds)
        await failures(5)
        await sender.aclose()
        server.close()
        await server.wait_closed()

    with caplog.at_level(logging.DEBUG, logger="agent.transport"):
        run(main())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(attempts) >= 15
    # one warning per cause in a row (a connection cut while the muxer closes may add a cause of its own)
    assert all(a != b for a, b in itertools.pairwise(warned)) and len(warned) <= 5, warned
    kinds = [("without answering OK" in w, "cannot connect" in w) for w in warned]
    assert [k for k in kinds if any(k)] == [(True, False), (False, True), (True, False)], warned
    assert all(w.startswith(f"{ep.uri}: ") and w.endswith("(retrying with backoff)") for w in warned)


def test_a_refusal_reason_too_long_for_an_ack_is_cut_with_a_mark() -> None:
    long, short = "frame: " + "x" * 300, "json: bad"
    got = orjson.loads(encode_ack(Ack(3, ((1, long), (2, short), (3, "y" * 200)))))["rejected"]
    assert got[0][1] == long[:199] + "…" and len(got[0][1]) == 200
    assert got[1][1] == short and got[2][1] == "y" * 200  # one of exactly 200 is whole
