"""Newline-delimited frames (NDJSON): one payload per ``\\n``-terminated line.

Sans-IO like the length-prefixed decoder. A line longer than the maximum is a
:class:`~agent.errors.FramingError` as soon as more than that many bytes are
buffered without a newline, so a peer that never sends one cannot make the
buffer grow. A trailing ``\\r`` is removed; blank lines are skipped unless
``keep_blank`` is set (then they come out as ``b""``, so callers can count lines).
"""

from __future__ import annotations

from collections.abc import Iterable

from ...errors import FramingError
from .base import BufferedDecoder
from .length import DEFAULT_MAX_FRAME

__all__ = ["NewlineDecoder", "encode_line", "encode_lines"]


def encode_line(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """``payload`` plus ``\\n``; a payload that is empty, too long or holds a newline is a FramingError."""
    if not payload:
        raise FramingError("empty line")
    if len(payload) > max_frame:
        raise FramingError(f"line of {len(payload)} bytes exceeds the maximum of {max_frame}")
    if b"\n" in payload:
        raise FramingError("payload contains a newline")
    return payload + b"\n"


def encode_lines(payloads: Iterable[bytes], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    return b"".join([encode_line(p, max_frame) for p in payloads])


class NewlineDecoder(BufferedDecoder):
    """Incremental decoder of newline-delimited payloads."""

    __slots__ = ("_scanned", "keep_blank")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, *, keep_blank: bool = False) -> None:
        if max_frame < 1:
            raise ValueError(f"max_frame must be at least 1, got {max_frame}")
        super().__init__(max_frame)
        self.keep_blank = keep_blank
        #: offset up to which the buffer is known to hold no newline
        self._scanned = 0

    def _compact(self, n: int) -> None:
        super()._compact(n)
        self._scanned = max(0, self._scanned - n)

    def _fail(self, msg: str) -> FramingError:
        self._scanned = 0
        return super()._fail(msg)

    def next_frame(self) -> bytes | None:
        if self._error is not None:
            raise self._error
        buf = self._buf
        while True:
            nl = buf.find(b"\n", max(self._pos, self._scanned))
            if nl < 0:
                self._scanned = len(buf)
                # a line may end in "\r" that is not part of its length
                if len(buf) - self._pos > self.max_frame + 1:
                    raise self._fail(f"line exceeds the maximum of {self.max_frame} bytes")
                return None
            end = nl - 1 if nl > self._pos and buf[nl - 1] == 0x0D else nl
            start = self._pos
            self._pos = self._scanned = nl + 1
            if end - start > self.max_frame:
                raise self._fail(f"line of {end - start} bytes exceeds the maximum of {self.max_frame}")
            if end > start or self.keep_blank:
                return bytes(buf[start:end])
