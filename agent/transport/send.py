"""``hoststamp send --to URI``: NDJSON CloudEvents on stdin, shipped as frames, acked.

Each non-blank input line must be one JSON object; it is sent byte for byte as
one frame. Lines that are not JSON objects are reported and not sent. The run
ends when every sent line is settled by the receiver, or when ``timeout``
passes without that (the connection is retried with backoff meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from ..codec.framing import DEFAULT_MAX_FRAME, NewlineDecoder
from ..errors import FramingError, TransportError
from .base import Dialer
from .dial import dialer
from .sender import AckedSender, Backoff

__all__ = ["SendReport", "send_ndjson"]

_CHUNK = 1 << 16


@dataclass(slots=True)
class SendReport:
    """What happened to the input, line by line where it went wrong."""

    lines: int = 0
    sent: int = 0
    acked: int = 0
    #: (line number, reason): not sent (not a JSON object, too long) or refused by the receiver
    problems: list[tuple[int, str]] = field(default_factory=list)
    #: set when some lines were never acknowledged
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None and self.acked == self.sent


def _check_line(line: bytes) -> str | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return "not a JSON object"
    return None


def _read_available(f: BinaryIO, n: int) -> bytes:
    """What the pipe has now (up to ``n`` bytes), so a slow writer's lines go out as they come."""
    read1 = getattr(f, "read1", None)
    data: bytes = read1(n) if read1 is not None else f.read(n)
    return data


async def send_ndjson(to: str | Dialer, stdin: BinaryIO, *, timeout: float = 30.0,
                      max_frame: int = DEFAULT_MAX_FRAME, max_unacked: int = 1000,
                      read: Callable[[BinaryIO, int], bytes] | None = None) -> SendReport:
    """Send every line of ``stdin`` to ``to`` (a URI or a dialer) and wait for the acks.

    ``timeout`` bounds each wait for room in the window and the final wait for
    acks. ``stdin`` is read in a worker thread so a slow pipe never blocks the loop.
    """
    report = SendReport()
    dial = dialer(to, timeout=min(timeout, 5.0)) if isinstance(to, str) else to

    def settled(done: list[tuple[int, bytes]], refused: list[tuple[tuple[int, bytes], str]]) -> None:
        report.acked += len(done)
        report.problems.extend((item[0], reason) for item, reason in refused)

    sender: AckedSender[tuple[int, bytes]] = AckedSender(
        dial, lambda item: item[1], name=to if isinstance(to, str) else "send",
        max_unacked=max_unacked, max_frame=max_frame, ack_timeout=timeout,
        backoff=Backoff(0.05, 2.0), on_settled=settled)
    reader = read or _read_available
    dec = NewlineDecoder(max_frame, keep_blank=True)
    lineno = 0
    try:
        while True:
            chunk = await asyncio.to_thread(reader, stdin, _CHUNK)
            try:
                if chunk:
                    dec.feed(chunk)
                elif not dec.at_boundary():
                    dec.feed(b"\n")  # a last line without its newline
                frames = dec.frames()
            except FramingError as exc:
                report.problems.append((lineno + len(getattr(exc, "frames", [])) + 1, str(exc)))
                report.error = "input stopped at an over-long line"
                frames = getattr(exc, "frames", [])
                chunk = b""
            batch: list[tuple[int, bytes]] = []
            for frame in frames:
                lineno += 1
                if not frame.strip():
                    continue
                problem = _check_line(frame)
                if problem is None:
                    batch.append((lineno, frame))
                else:
                    report.problems.append((lineno, problem))
            report.lines = lineno
            if batch:
                await sender.put(batch, timeout=timeout)
                report.sent += len(batch)
            if not chunk:
                break
        await sender.drain(timeout=timeout)
    except TransportError as exc:
        report.error = str(exc)
    finally:
        await sender.aclose()
    report.problems.sort()
    return report
