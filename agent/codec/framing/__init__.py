"""Framing codecs, sans-IO: bytes in any split -> payloads, payloads -> bytes.

* :mod:`.length` — the contract's frames on stream sockets: a 4-byte big-endian
  length ``N`` (``1 <= N <= max``, default 1 MiB), then ``N`` bytes.
* :mod:`.newline` — NDJSON lines, for stdin and files.

Both decoders share one shape (``feed``, ``next_frame``, ``frames``,
``buffered``, ``at_boundary``) so callers can take either as a :class:`Decoder`.
"""

from __future__ import annotations

import typing

from .length import DEFAULT_MAX_FRAME, HEADER, LengthPrefixedDecoder, encode_frame, encode_frames
from .newline import NewlineDecoder, encode_line, encode_lines

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER",
    "Decoder",
    "LengthPrefixedDecoder",
    "NewlineDecoder",
    "encode_frame",
    "encode_frames",
    "encode_line",
    "encode_lines",
]


class Decoder(typing.Protocol):
    """What the receiver needs from a framing decoder."""

    max_frame: int

    @property
    def buffered(self) -> int: ...

    def feed(self, data: bytes) -> None: ...

    def next_frame(self) -> bytes | None: ...

    def frames(self) -> list[bytes]: ...

    def at_boundary(self) -> bool: ...
