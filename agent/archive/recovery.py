"""What a writer finds when it opens an archive directory, and the repairs it makes first.

:func:`recover` reads the newest segment's records and events, finds a torn last
line in either file (returning a :class:`Cut` for each; the writer truncates with
:func:`apply_cut` only when it is about to record the cut), finishes a compression
or a retention that a crash interrupted, and returns the tree state to continue from. It never drops a complete line: a
directory it cannot make sense of raises :class:`~agent.errors.SinkError`
naming the file, and is left as it is for ``hoststamp verify``.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import SinkError, VerifyError
from ..signing.keys import VerifyKey
from . import layout
from .merkle import leaf_hash
from .ownership import log_candidates, other_origin_below
from .records import b64, chain_hash, parse_record, unb64, unb64_list

__all__ = ["GZIP_LEVEL", "Cut", "Resume", "apply_cut", "compress_segment", "fsync_dir", "read_records", "recover"]

log = logging.getLogger("hoststamp.sink")

#: zlib level 3: on event NDJSON within 10 % of level 9's size at three times its speed
GZIP_LEVEL = 3


@dataclass(frozen=True, slots=True)
class Cut:
    """A torn last line removed from ``file`` at ``offset``."""

    file: str
    offset: int
    length: int
    sha256: str


@dataclass(slots=True)
class Resume:
    """Where the writer continues."""

    seg: int
    #: the segment must be created (its log holds no open record yet)
    create: bool
    first: int
    frontier: list[bytes]
    origin: str | None = None
    leaves: list[bytes] = field(default_factory=list)
    events_bytes: int = 0
    events_sha: Any = field(default_factory=hashlib.sha256)
    ck_size: int = 0
    prev: str = ""
    opened_at: float | None = None
    cuts: list[Cut] = field(default_factory=list)
    #: an existing archive is being reopened
    resumed: bool = False
    #: ... and its last writer ended with a stop record
    clean: bool = False
    #: the key id of the archive's last record (the last writer's key)
    keyid: str | None = None


def fsync_dir(root: Path) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _damaged(path: Path, why: str) -> SinkError:
    return SinkError(f"{path}: {why}; the archive was left untouched (check it with: hoststamp verify {path.parent})")


def _cut_tail(path: Path, data: bytes) -> tuple[bytes, Cut | None]:
    complete, tail = layout.split_tail(data)
    if not tail:
        return complete, None
    return complete, Cut(path.name, len(complete), len(tail), b64(hashlib.sha256(tail).digest()))


def apply_cut(root: Path, cut: Cut, *, sync: bool = True) -> None:
    """Truncate the torn line away (the writer does it once it is sure to record the cut next)."""
    with open(root / cut.file, "r+b") as f:
        f.truncate(cut.offset)
        if sync:
            os.fsync(f.fileno())


def read_records(path: Path) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Complete lines of a log and their parsed records (a torn tail is ignored here)."""
    complete, _tail = layout.split_tail(path.read_bytes())
    lines = complete.split(b"\n")[:-1]
    try:
        return lines, [parse_record(line) for line in lines]
    except VerifyError as exc:
        raise _damaged(path, str(exc)) from None


def _digest_of(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(layout.read_events(path)).digest()
    except (OSError, EOFError, zlib.error):
        return None


def compress_segment(root: Path, n: int, expected_sha: bytes | None, *, sync: bool = True) -> None:
    """Replace segment ``n``'s events file by its gzip form (atomically, via a temporary file)."""
    src, dst = layout.events_path(root, n), layout.gz_path(root, n)
    tmp = dst.with_name(dst.name + layout.TMP)
    if dst.exists() and src.exists():
        if expected_sha is not None and _digest_of(dst) == expected_sha:
            src.unlink()
            if sync:
                fsync_dir(root)
            return
        dst.unlink()
    if not src.exists():
        return
    with open(src, "rb") as fin, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz:
            shutil.copyfileobj(fin, gz, 1 << 20)
        if sync:
            raw.flush()
            os.fsync(raw.fileno())
    os.replace(tmp, dst)
    if sync:
        fsync_dir(root)
    src.unlink()
    if sync:
        fsync_dir(root)


def _retention_hi(listing: layout.Listing, keys: Mapping[str, VerifyKey] | None) -> int:
    """The highest segment a retention the newest log records removed (0: none), to finish removing what a
    crash left of it. Only a record of the writer's own is acted on (:mod:`.ownership`): in the newest log (a
    retention is recorded in the segment just opened, then carried out), signed by a trusted key, chained to
    the record before it, naming older segments only, in a log that opens with the origin of every segment it
    would remove that is still present. Anything else is left for ``hoststamp verify``."""
    n = max(listing.logs)
    path = listing.logs[n]
    if not keys:
        return 0
    hi = 0
    for c in log_candidates(n, path, path.read_bytes(), keys):
        why = c.why
        if why is None:
            clash = other_origin_below(listing, c.high, str(c.origin), keys)
            if clash is not None:
                why = f"segment {clash[0]}, which it would remove, belongs to origin {clash[1]!r}"
        if why is not None:
            log.warning("%s: a retention record not acted on (%s); check the archive with hoststamp verify",
                        path.parent / c.where, why)
            continue
        hi = max(hi, c.high)
    return hi


def _opened_at(rec: dict[str, Any]) -> float | None:
    try:
        return datetime.strptime(str(rec.get("time")), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return None


def recover(root: Path, *, sync: bool = True, keys: Mapping[str, VerifyKey] | None = None) -> Resume:
    """Inspect (and minimally repair) ``root``; return where to continue. ``keys``: the writer's own, which a
    record must be signed with for recovery to act on it (a retention that removes segments)."""
    listing = layout.scan(root)
    for tmp in listing.tmp:
        tmp.unlink()
    if not listing.logs:
        if listing.events or listing.gz:
            raise _damaged(root / "seg-*.log", "event segments without their record logs")
        return Resume(seg=1, create=True, first=0, frontier=[])
    hi = _retention_hi(listing, keys)
    for n in [n for n in listing.numbers() if n <= hi]:
        for table in (listing.logs, listing.events, listing.gz):
            p = table.pop(n, None)
            if p is not None:
                p.unlink()
    n = max(listing.logs)
    log = listing.logs[n]
    cuts: list[Cut] = []
    complete, cut = _cut_tail(log, log.read_bytes())
    if cut:
        cuts.append(cut)
    lines, records = read_records(log)
    if not records:
        return _resume_after_empty_log(root, listing, n, cuts)
    head = records[0]
    if head["kind"] != "open":
        raise _damaged(log, "the first record is not an open record")
    origin, first = str(head["origin"]), int(head["first"])
    frontier = _frontier(log, head)
    prev = chain_hash(lines[-1])
    checkpoints = [r for r in records if r["kind"] == "checkpoint"]
    ck_size = first
    if checkpoints:
        ck_size = _note_size(checkpoints[-1]["note"])
    close = records[-1] if records[-1]["kind"] == "close" else None
    if close is not None:
        end = int(close["first"]) + int(close["count"])
        if close.get("compression") == "gzip":
            compress_segment(root, n, unb64(close["sha256"]), sync=sync)
        return Resume(seg=n + 1, create=True, first=end, frontier=_frontier(log, close, "frontier"),
                      origin=origin, ck_size=end, prev=prev, cuts=cuts, resumed=True, keyid=_keyid(records))
    ev = layout.events_path(root, n)
    if n in listing.gz:
        raise _damaged(listing.gz[n], "the open segment is compressed")
    data = ev.read_bytes() if ev.exists() else b""
    complete, cut = _cut_tail(ev, data)
    if cut:
        cuts.append(cut)
    leaves = [leaf_hash(line) for line in complete.split(b"\n")[:-1]]
    if ck_size > first + len(leaves):
        raise _damaged(ev, f"a checkpoint covers {ck_size} events but the archive holds {first + len(leaves)}")
    stop = records[-1] if records[-1]["kind"] == "stop" else None
    if stop is not None and not cut and int(stop["size"]) != first + len(leaves):
        # a clean stop seals every event it counts: lines beyond them were not written by the writer, and
        # sealing them now would vouch for them
        raise _damaged(ev, f"the writer stopped cleanly with {stop['size']} events, and the archive now holds "
                           f"{first + len(leaves)}: events were added after it stopped")
    sha = hashlib.sha256(complete)
    return Resume(seg=n, create=False, first=first, frontier=frontier, origin=origin, leaves=leaves,
                  events_bytes=len(complete), events_sha=sha, ck_size=ck_size, prev=prev,
                  opened_at=_opened_at(head), cuts=cuts, resumed=True,
                  clean=not cuts and records[-1]["kind"] == "stop", keyid=_keyid(records))


def _resume_after_empty_log(root: Path, listing: layout.Listing, n: int, cuts: list[Cut]) -> Resume:
    """The newest log lost even its open record: take the state from the previous segment's close."""
    ev = layout.events_path(root, n)
    if ev.exists() and ev.stat().st_size:
        raise _damaged(ev, "events without an open record")
    if n - 1 not in listing.logs:
        if n == 1:
            return Resume(seg=1, create=True, first=0, frontier=[], cuts=cuts)
        raise _damaged(layout.log_path(root, n), "the open record is lost and the previous segment is gone")
    lines, records = read_records(listing.logs[n - 1])
    if not records or records[-1]["kind"] != "close":
        raise _damaged(listing.logs[n - 1], "the segment before an empty log is not closed")
    close, origin = records[-1], None
    if records[0]["kind"] == "open":
        origin = str(records[0]["origin"])
    end = int(close["first"]) + int(close["count"])
    return Resume(seg=n, create=True, first=end, frontier=_frontier(listing.logs[n - 1], close),
                  origin=origin, ck_size=end, prev=chain_hash(lines[-1]), cuts=cuts, resumed=True,
                  keyid=_keyid(records))


def _keyid(records: list[dict[str, Any]]) -> str | None:
    keyid = records[-1].get("keyid")
    return keyid if isinstance(keyid, str) else None


def _frontier(path: Path, rec: dict[str, Any], key: str = "frontier") -> list[bytes]:
    try:
        return unb64_list(rec.get(key), key)
    except VerifyError as exc:
        raise _damaged(path, str(exc)) from None


def _note_size(note: Any) -> int:
    lines = str(note).split("\n")
    if len(lines) < 2 or not lines[1].isdigit():
        raise SinkError("a checkpoint record holds no tree size")
    return int(lines[1])
