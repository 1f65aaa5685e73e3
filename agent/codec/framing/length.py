"""Length-prefixed frames: a 4-byte big-endian length N, then N payload bytes.

The decoder is sans-IO: :meth:`LengthPrefixedDecoder.feed` takes whatever
bytes a socket produced (any split, any size) and :meth:`next_frame` hands out
complete payloads. A length of 0 or above the maximum is a
:class:`~agent.errors.FramingError` the moment its four header bytes are seen,
before any payload byte is buffered: nothing is ever allocated from a length the
peer declared. After an error the decoder stays broken; the caller closes the
connection.

A refused header whose four bytes read as the start of JSON text (``{"sp``,
``[{``, `` {``) says so: it is most likely NDJSON sent where frames belong.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ...errors import FramingError
from .base import BufferedDecoder

__all__ = ["DEFAULT_MAX_FRAME", "HEADER", "LengthPrefixedDecoder", "encode_frame", "encode_frames",
           "looks_like_json_text"]

#: the contract's default maximum payload size (1 MiB)
DEFAULT_MAX_FRAME = 1 << 20
#: bytes of the length prefix
HEADER = 4

_LEN = struct.Struct(">I")
_MAX_REPRESENTABLE = (1 << 32) - 1
#: JSON's whitespace (RFC 8259), what an object or array starts with, and the bytes of text (printable ASCII)
_JSON_SPACE = b" \t\r\n"
_JSON_OPEN = b"{["
_TEXT = frozenset(_JSON_SPACE + bytes(range(0x20, 0x7F)))


def looks_like_json_text(header: bytes) -> bool:
    """Whether a frame header (4 bytes) reads as the beginning of JSON text: optional whitespace, then ``{`` or
    ``[``, every byte printable ASCII or whitespace."""
    rest = header.lstrip(_JSON_SPACE)
    return bool(rest) and rest[0] in _JSON_OPEN and all(b in _TEXT for b in header)


def _refusal(n: int, header: bytes, max_frame: int) -> str:
    """Why a declared length ``n`` (from ``header``) is refused."""
    if n == 0:
        return "empty frame"
    msg = f"declared frame length {n} exceeds the maximum of {max_frame}"
    if looks_like_json_text(header):
        # within the 200 characters an ack carries: NDJSON goes to `hoststamp send`, which frames it
        msg += (f"; header {header!r} looks like JSON text: frames start with a 4-byte big-endian length; "
                "NDJSON goes to `hoststamp send`")
    return msg


def _check_max(max_frame: int) -> int:
    if not 1 <= max_frame <= _MAX_REPRESENTABLE:
        raise ValueError(f"max_frame must be between 1 and {_MAX_REPRESENTABLE}, got {max_frame}")
    return max_frame


def encode_frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """``payload`` with its length prefix; an empty or oversized payload is a FramingError."""
    n = len(payload)
    if n == 0:
        raise FramingError("empty frame")
    if n > max_frame:
        raise FramingError(f"frame of {n} bytes exceeds the maximum of {max_frame}")
    return _LEN.pack(n) + payload


def encode_frames(payloads: Iterable[bytes], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Several frames as one buffer, for a single write."""
    return b"".join([encode_frame(p, max_frame) for p in payloads])


class LengthPrefixedDecoder(BufferedDecoder):
    """Incremental decoder of length-prefixed frames."""

    __slots__ = ()

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(_check_max(max_frame))

    def next_frame(self) -> bytes | None:
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER:
            return None
        (n,) = _LEN.unpack_from(buf, pos)
        if n == 0 or n > self.max_frame:
            raise self._fail(_refusal(n, bytes(buf[pos : pos + HEADER]), self.max_frame))
        end = pos + HEADER + n
        if end > len(buf):
            return None
        self._pos = end
        return bytes(buf[pos + HEADER : end])

    def frames(self) -> list[bytes]:
        """Every complete payload buffered now (the loop of :meth:`next_frame`, without a call per frame)."""
        if self._error is not None:
            raise self._error
        out: list[bytes] = []
        buf = self._buf
        pos = self._pos
        size = len(buf)
        unpack = _LEN.unpack_from
        limit = self.max_frame
        while size - pos >= HEADER:
            (n,) = unpack(buf, pos)
            if n == 0 or n > limit:
                self._pos = pos
                exc = self._fail(_refusal(n, bytes(buf[pos : pos + HEADER]), limit))
                exc.frames = out  # type: ignore[attr-defined]
                raise exc
            end = pos + HEADER + n
            if end > size:
                break
            out.append(bytes(buf[pos + HEADER : end]))
            pos = end
        self._pos = pos
        return out

