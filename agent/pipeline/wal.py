"""The spool's record format, pure: events to bytes and back, with a CRC per record.

A segment file is :data:`MAGIC` followed by records back to back. A record is::

    u32 payload length | u32 CRC-32 (zlib) of the payload | payload            (big-endian)

and its payload is::

    u64 index | u64 sequence | u32 len(id) | u32 len(source) | u32 len(type) | id | source | type | body

``index`` numbers records across the whole spool and only goes up; ``body``
is the signed event JSON exactly as sinks get it. Nothing here does I/O:
:func:`parse` walks a buffer and says where it stopped and why, :func:`resync`
looks for the next intact record after damage.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ..model import Event

__all__ = [
    "HEADER", "MAGIC", "MAX_PAYLOAD", "Parsed", "Record", "encode", "encode_many", "parse", "record_size", "resync",
]

MAGIC = b"HSWAL\x00\x01\n"
_HEAD = struct.Struct(">II")
_META = struct.Struct(">QQIII")
HEADER = _HEAD.size
_FIXED = HEADER + _META.size
#: a length field above this is damage, not a record
MAX_PAYLOAD = 64 << 20

Status = Literal["end", "partial", "corrupt"]


class Record(NamedTuple):
    #: the record's index in the spool
    number: int
    event: Event
    #: byte offsets of the record in the buffer it was parsed from
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Parsed:
    records: list[Record]
    #: where parsing stopped: the end of the last good record
    stop: int
    #: ``end``: the buffer ended on a record boundary; ``partial``: it ends inside a record
    #: (more bytes may come, or a torn write); ``corrupt``: a bad length, CRC or index at ``stop``
    status: Status
    problem: str = ""


def record_size(event: Event) -> int:
    """Bytes :func:`encode` will produce for ``event`` (exact for ASCII id, source and type)."""
    return _FIXED + len(event.id) + len(event.source) + len(event.type) + len(event.body)


def encode(index: int, event: Event) -> bytes:
    ident, source, etype = event.id.encode(), event.source.encode(), event.type.encode()
    payload = b"".join(
        (_META.pack(index, event.sequence, len(ident), len(source), len(etype)), ident, source, etype, event.body)
    )
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def encode_many(first_index: int, events: Sequence[Event]) -> bytes:
    return b"".join([encode(first_index + i, e) for i, e in enumerate(events)])


def _decode(buf: bytes, start: int, end: int) -> tuple[int, Event] | None:
    """The payload at ``buf[start:end]`` (CRC already checked), without copying it first."""
    if end - start < _META.size:
        return None
    index, seq, n_id, n_src, n_type = _META.unpack_from(buf, start)
    a = start + _META.size
    b, c, d = a + n_id, a + n_id + n_src, a + n_id + n_src + n_type
    if d > end:
        return None
    try:
        ident, source, etype = buf[a:b].decode(), buf[b:c].decode(), buf[c:d].decode()
    except UnicodeDecodeError:
        return None
    return index, Event(ident, source, etype, seq, buf[d:end])


def parse(buf: bytes, start: int = 0, *, after: int = 0, limit: int | None = None, upto: int | None = None
          ) -> Parsed:
    """Records of ``buf`` from ``start``, each with an index greater than the one before (and than ``after``).

    Stops after ``limit`` records or before one with an index above ``upto``
    (status ``end``), at the end of the buffer, or at the first damaged record.
    """
    out: list[Record] = []
    pos, n, last = start, len(buf), after
    unpack, crc, view = _HEAD.unpack_from, zlib.crc32, memoryview(buf)
    while pos < n:
        if limit is not None and len(out) >= limit:
            return Parsed(out, pos, "end")
        if pos + HEADER > n:
            return Parsed(out, pos, "partial", "truncated record header")
        length, check = unpack(buf, pos)
        if length > MAX_PAYLOAD or length < _META.size:
            return Parsed(out, pos, "corrupt", f"implausible record length {length}")
        end = pos + HEADER + length
        if end > n:
            return Parsed(out, pos, "partial", "truncated record")
        if crc(view[pos + HEADER : end]) != check:
            return Parsed(out, pos, "corrupt", "CRC mismatch")
        decoded = _decode(buf, pos + HEADER, end)
        if decoded is None:
            return Parsed(out, pos, "corrupt", "malformed record fields")
        index, event = decoded
        if index <= last:
            return Parsed(out, pos, "corrupt", f"record index {index} does not follow {last}")
        if upto is not None and index > upto:
            return Parsed(out, pos, "end")
        out.append(Record(index, event, pos, end))
        last = index
        pos = end
    return Parsed(out, pos, "end")


def resync(buf: bytes, start: int, *, after: int = 0) -> int | None:
    """The first offset after ``start`` where an intact record with an index above ``after`` begins."""
    n = len(buf)
    unpack, crc, view = _HEAD.unpack_from, zlib.crc32, memoryview(buf)
    for pos in range(start + 1, n - HEADER - _META.size + 1):
        length, check = unpack(buf, pos)
        end = pos + HEADER + length
        if length < _META.size or length > MAX_PAYLOAD or end > n:
            continue
        if crc(view[pos + HEADER : end]) == check and (d := _decode(buf, pos + HEADER, end)) is not None and (
            d[0] > after
        ):
            return pos
    return None
