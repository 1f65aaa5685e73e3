"""Which retention records are an archive's own, for the writer and the verifier alike.

A retention record removes segments only when it is the archive's own:

- it is a line of the log of a segment after every one it names (its ``seg`` is that log's number, and
  ``1 <= low <= high < seg``), signed by a trusted key, and its ``prev`` is the hash of the record line
  before it in that log (it sits in the record chain where it was written);
- that log opens with the archive's origin, and no segment it names that is still present opens with
  another one.

A record copied from another archive signed by the same key fails the first test where it is pasted (its
``prev`` belongs to the other archive's chain), and the second in its own log copied along with it (its
origin is the other archive's, and the segments it would remove are this archive's).

Every function takes the trusted ``keys``; ``None`` applies the same rule without checking signatures, for
``prove``, whose bundle is checked with trusted keys when it is verified.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VerifyError
from ..signing.keys import VerifyKey
from . import layout
from .records import chain_hash, parse_record, verify_record

__all__ = ["Candidate", "Keys", "Retention", "find_retention", "in_place", "log_candidates", "log_origin",
           "other_origin_below"]

#: trusted keys (key id -> key), or None: signatures not checked
Keys = Mapping[str, VerifyKey] | None


def log_origin(path: Path, keys: Keys) -> str | None:
    """The origin of a log's open record: its first line, signed by a trusted key. None without one."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
        if not first.endswith(b"\n"):
            return None
        rec = parse_record(first[:-1])
        if rec["kind"] != "open" or not isinstance(rec.get("origin"), str):
            return None
        if keys is not None:
            verify_record(rec, keys)
    except (OSError, VerifyError):
        return None
    return str(rec["origin"])


def in_place(n: int, lines: list[bytes], i: int, rec: Mapping[str, Any], keys: Keys) -> str | None:
    """Why the retention record ``rec``, line ``i`` of segment ``n``'s log ``lines``, is not where the archive's
    own record would be; None when it is."""
    try:
        if keys is not None:
            verify_record(rec, keys)
    except VerifyError as exc:
        return str(exc)
    seg = rec.get("segments")
    if rec["seg"] != n:
        return f"it names segment {rec['seg']} as its own, but is in the log of segment {n}"
    if (not isinstance(seg, list) or len(seg) != 2 or not all(type(x) is int for x in seg)
            or not 1 <= seg[0] <= seg[1] < n):
        return f"the segments it removes ({seg!r}) are not segments before its own"
    if i == 0 or rec["prev"] != chain_hash(lines[i - 1]):
        return "it does not follow the record before it (it is not in this archive's record chain)"
    return None


def other_origin_below(listing: layout.Listing, high: int, origin: str,
                       keys: Keys) -> tuple[int, str] | None:
    """A present segment up to ``high`` whose log opens with an origin other than ``origin``, and that origin."""
    for n in sorted(listing.logs):
        if n > high:
            break
        other = log_origin(listing.logs[n], keys)
        if other is not None and other != origin:
            return n, other
    return None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A retention record of the directory: where it is, what it says, and whether it is in place."""

    where: str
    rec: dict[str, Any]
    #: the origin of the log it is in (None: no signed open record), and why it is not in place (None: it is)
    origin: str | None
    why: str | None

    @property
    def high(self) -> int:
        return int(self.rec["segments"][1]) if self.why is None else -1


@dataclass(slots=True)
class Retention:
    """The record that says which segments are gone (None: none), the archive's origin, and the retention
    records that are not the archive's own, each ``(where, message)``."""

    chosen: Candidate | None = None
    origin: str | None = None
    foreign: list[tuple[str, str]] = field(default_factory=list)


def log_candidates(n: int, path: Path, data: bytes, keys: Keys) -> Iterator[Candidate]:
    """The retention records in segment ``n``'s log (``data``, read from ``path``; its complete lines, a torn
    tail being reported by the walk), each with why it is not in place (None: it is)."""
    if b'"retention"' not in data:
        return
    lines = data.split(b"\n")[:-1]
    origin = log_origin(path, keys)
    for i, line in enumerate(lines):
        if b'"retention"' not in line:
            continue
        try:
            rec = parse_record(line)
        except VerifyError:
            continue  # not a record at all: the walk reports it
        if rec["kind"] != "retention":
            continue
        why = in_place(n, lines, i, rec, keys)
        if why is None and origin is None:
            why = "its log has no open record" + (" signed by a trusted key" if keys is not None else "")
        yield Candidate(f"{path.name}:{i + 1}", rec, origin, why)


def _candidates(listing: layout.Listing, keys: Keys) -> list[Candidate]:
    out: list[Candidate] = []
    for n in sorted(listing.logs):
        try:
            data = listing.logs[n].read_bytes()
        except OSError:
            continue  # reported when the segment itself is read
        out.extend(log_candidates(n, listing.logs[n], data, keys))
    return out


def find_retention(listing: layout.Listing, keys: Keys) -> Retention:
    """The newest retention record that is the archive's own, and every one that is not."""
    found = _candidates(listing, keys)
    out = Retention()
    refused: dict[str, str] = {}
    for c in sorted((c for c in found if c.why is None), key=lambda c: -c.high):
        if c.origin is None:
            continue
        clash = other_origin_below(listing, c.high, c.origin, keys)
        if clash is None:
            out.chosen, out.origin = c, c.origin
            break
        refused[c.where] = (f"its archive's origin is {c.origin!r}, but segment {clash[0]}, which it would "
                            f"remove, belongs to {clash[1]!r}")
    if out.origin is None:
        out.origin = next((o for n in sorted(listing.logs) if (o := log_origin(listing.logs[n], keys))), None)
    for c in found:
        why = c.why or refused.get(c.where)
        if why is None and c.origin != out.origin:
            why = f"its origin is {c.origin!r}, this archive's is {out.origin!r}"
        if why is not None:
            seg = c.rec.get("segments")
            out.foreign.append((c.where, f"a retention record (of segments {seg!r}) that is not this archive's "
                                         f"own removes nothing: {why}"))
    return out
