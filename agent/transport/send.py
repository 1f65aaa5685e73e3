"""``hoststamp send --to URI``: NDJSON CloudEvents on stdin, shipped as frames, acked.

Each non-blank input line must be one JSON object; it is sent byte for byte as
one frame (a UTF-8 byte order mark before the first line is skipped). Lines
that are not UTF-8 JSON objects, or longer than the largest frame, are
reported by line number and not sent; the lines after them are. The run
ends when every sent line is settled by the receiver, or when ``timeout``
passes without that (the connection is retried with backoff meanwhile). An
input that cannot be read further ends the reading, not the run: what was sent
is still settled, and the error says after which line the input was lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from ..codec.framing import DEFAULT_MAX_FRAME
from ..errors import TransportError
from ..model import not_utf8
from .base import Dialer
from .dial import dialer
from .sender import AckedSender, Backoff

__all__ = ["SendReport", "send_ndjson"]

_CHUNK = 1 << 16
#: a UTF-8 byte order mark, skipped at the start of the input
_BOM = b"\xef\xbb\xbf"
#: seconds a connection attempt may take, and without any ack (or heartbeat) before the connection counts as
#: dead and is made again (at most: a shorter ``timeout`` bounds them too)
_CONNECT = 5.0
_ACK_SILENCE = 30.0


@dataclass(slots=True)
class SendReport:
    """What happened to the input, line by line where it went wrong."""

    lines: int = 0
    sent: int = 0
    acked: int = 0
    #: (line number, reason): not sent (not a JSON object, too long) or refused by the receiver
    problems: list[tuple[int, str]] = field(default_factory=list)
    #: told of each problem as it is found (the command says it at once, not only at the end)
    on_problem: Callable[[int, str], None] | None = None
    #: set when some lines were never acknowledged
    error: str | None = None
    #: the first line not handed to the sender when it gave up (the input from there on was not sent, maybe not
    #: even read), None when it took all of it
    unsent_from: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None and self.acked == self.sent

    def problem(self, lineno: int, reason: str) -> None:
        self.problems.append((lineno, reason))
        if self.on_problem is not None:
            self.on_problem(lineno, reason)

    def took(self, n: int) -> None:
        """``n`` more lines were taken by the sender."""
        self.sent += n


def _check_line(line: bytes) -> str | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if line.startswith(_BOM):
            return "starts with a byte order mark (one is skipped only before the first line)"
        return not_utf8(line, " of the line") or f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return "not a JSON object"
    return None


class _Lines:
    """The input's lines, each at most ``max_len`` bytes (a ``\r`` before the ``\n`` not counted). A longer
    line comes out as None, its bytes dropped as they arrive, and the lines after it go on as usual. A UTF-8
    byte order mark at the very start of the input is skipped."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self._buf = bytearray()
        #: inside a line already known to be too long: drop up to its newline
        self._skipping = False
        #: nothing but (a beginning of) a byte order mark read yet
        self._at_start = True

    def _line(self, raw: bytes) -> bytes | None:
        line = raw[:-1] if raw.endswith(b"\r") else raw
        return None if len(line) > self.max_len else line

    def feed(self, chunk: bytes) -> list[bytes | None]:
        buf = self._buf
        buf += chunk
        if self._at_start:
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
            elif len(buf) < len(_BOM) and _BOM.startswith(buf):
                return []  # the rest of a mark may come in the next read
            self._at_start = False
        out: list[bytes | None] = []
        pos = 0
        while (nl := buf.find(b"\n", pos)) >= 0:
            if self._skipping:
                self._skipping = False
                out.append(None)
            else:
                out.append(self._line(bytes(buf[pos:nl])))
            pos = nl + 1
        del buf[:pos]
        if self._skipping or len(buf) > self.max_len + 1:  # no newline in sight: the line is too long already
            self._skipping = True
            buf.clear()
        return out

    def end(self) -> list[bytes | None]:
        """The last line, when the input does not end with a newline."""
        if self._skipping:
            self._skipping = False
            return [None]
        rest, self._buf = bytes(self._buf), bytearray()
        return [self._line(rest)] if rest else []


def _read_available(f: BinaryIO, n: int) -> bytes:
    """What the pipe has now (up to ``n`` bytes), so a slow writer's lines go out as they come."""
    read1 = getattr(f, "read1", None)
    data: bytes = read1(n) if read1 is not None else f.read(n)
    return data


def retry_backoff(timeout: float | None) -> Backoff:
    """How ``send`` waits between tries: full jitter up to 30 s, and with a ``timeout`` up to a quarter of it at
    most, so a receiver that is back before the time is up is tried again in time."""
    cap = 30.0 if timeout is None else min(30.0, timeout / 4)
    return Backoff(min(0.1, cap), cap)


async def send_ndjson(to: str | Dialer, stdin: BinaryIO, *, timeout: float | None = None,
                      max_frame: int = DEFAULT_MAX_FRAME, max_unacked: int = 1000,
                      read: Callable[[BinaryIO, int], bytes] | None = None,
                      on_problem: Callable[[int, str], None] | None = None) -> SendReport:
    """Send every line of ``stdin`` to ``to`` (a URI or a dialer) and wait for the acks.

    ``timeout`` bounds each wait for room in the window and the final wait for
    acks (None: however long the receiver is away). ``stdin`` is read in a worker
    thread so a slow pipe never blocks the loop. ``on_problem`` is told of each line
    not sent or refused as it is found.
    """
    report = SendReport(on_problem=on_problem)
    dial = dialer(to, timeout=min(timeout or _CONNECT, _CONNECT)) if isinstance(to, str) else to

    def settled(done: list[tuple[int, bytes]], refused: list[tuple[tuple[int, bytes], str]]) -> None:
        report.acked += len(done)
        for item, reason in refused:
            report.problem(item[0], reason)

    sender: AckedSender[tuple[int, bytes]] = AckedSender(
        dial, lambda item: item[1], name=to if isinstance(to, str) else "send",
        max_unacked=max_unacked, max_frame=max_frame, ack_timeout=min(timeout or _ACK_SILENCE, _ACK_SILENCE),
        backoff=retry_backoff(timeout), on_settled=settled)
    reader = read or _read_available
    lines = _Lines(max_frame)
    lineno = 0
    batch: list[tuple[int, bytes]] = []
    taken_before = 0
    unread: str | None = None
    try:
        while True:
            try:
                chunk = await asyncio.to_thread(reader, stdin, _CHUNK)
            except OSError as exc:  # what was sent is still settled; the rest was never read
                after = f" after line {lineno}" if lineno else ""
                unread = f"cannot read the input{after}: {exc.strerror or exc}"
                report.unsent_from = lineno + 1
                break
            batch = []
            for frame in lines.feed(chunk) if chunk else lines.end():
                lineno += 1
                if frame is None:
                    report.problem(lineno, f"line exceeds the maximum of {max_frame} bytes: not sent")
                    continue
                if not frame.strip():
                    continue
                problem = _check_line(frame)
                if problem is None:
                    batch.append((lineno, frame))
                else:
                    report.problem(lineno, problem)
            report.lines = lineno
            if batch:
                taken_before = report.sent
                await sender.put_as_room_allows(batch, timeout, report.took)
                batch = []
            if not chunk:
                break
        await sender.drain(timeout=timeout)
    except TransportError as exc:
        report.error = str(exc)
        if batch:  # it gave up waiting for room: what was not taken, and everything after it, was not sent
            report.unsent_from = batch[min(report.sent - taken_before, len(batch) - 1)][0]
    finally:
        await sender.aclose()
    if unread is not None:
        report.error = unread if report.error is None else f"{unread}; {report.error}"
    report.problems.sort()
    return report
