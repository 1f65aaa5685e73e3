"""Offline verification of an archive directory: :func:`verify_archive` -> :class:`Report`.

One pass over the segments in number order, with O(log n) tree state: every
record's signature and chain link, every event's signature and per-source
sequence, the Merkle root at every checkpoint, every checkpoint's signature and
its consistency proof from the one before, each closed segment's count and
SHA-256, missing, extra, renamed and reordered files. Events after the last
checkpoint are reported as unsealed (a problem: nothing proves they were not
added, removed or reordered). After a break (a missing segment, a start that
does not follow) the tree resynchronises at the next segment's open record, so
one deletion is reported once and the rest of the archive is still checked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import VerifyError
from ..signing.keys import VerifyKey
from . import layout
from .merkle import EMPTY_ROOT, CompactRange, leaf_hash, verify_consistency
from .note import verify_checkpoint
from .ownership import find_retention
from .records import chain_hash, noncanonical, parse_record, unb64, unb64_list, verify_record
from .report import Findings, Report, Summary
from .segevents import SegmentEvents
from .verifyevents import EventChecks

__all__ = ["verify_archive", "wrong_segment"]


class _Verifier:
    def __init__(self, root: Path, keys: Mapping[str, VerifyKey],
                 guest_keys: Mapping[str, VerifyKey] | None = None) -> None:
        self.root, self.keys, self.guest_keys = root, keys, guest_keys
        self.f = Findings()
        #: each event line's own checks, and the per-source sequences (:mod:`.verifyevents`)
        self.events = EventChecks(self.f, keys, guest_keys)
        self.c = dict.fromkeys(("events", "signed_ok", "checkpoints", "cuts", "retained_from"), 0)
        self.listing = layout.scan(root)
        self.tree: CompactRange | None = CompactRange(0)
        self.last_ck: tuple[int, bytes] | None = (0, EMPTY_ROOT)
        #: size of the last checkpoint that matched the events; leaves proven by checkpoints so far; where the
        #: current run of matching checkpoints began (None after a mismatch, until the tree resynchronises)
        self.sealed = 0
        self.sealed_count = 0
        self.sealed_from: int | None = 0
        self.prev: str | None = ""
        self.origin: str | None = None
        self.reported_root: set[str] = set()
        #: the size the last clean stop recorded, until the writer resumes
        self.stopped_at: int | None = None

    # -- the walk ------------------------------------------------------------------------------------------------

    def run(self) -> Report:
        for p in self.listing.other:
            self.f.problem("unexpected-file", p.name, "not a file an archive holds (renamed or added?)")
        for p in self.listing.tmp:
            self.f.note("temporary-file", p.name, "left by an interrupted compression; the writer removes it")
        start = self._retention()
        numbers = [n for n in self.listing.numbers() if n >= start]
        for n in self.listing.numbers():
            if n < start:
                self.f.note("retained-present", layout.seg_stem(n), "removed by retention but still present; ignored")
        if not numbers:
            if start == 1:
                self.f.problem("empty", str(self.root), "no segments: not an archive, or everything was deleted")
            else:
                self.f.problem("missing-segment", layout.seg_stem(start), "no segment after the retention boundary")
        end = max(numbers, default=start - 1)
        closed = False
        for n in range(start, end + 1):
            try:
                closed = self._segment(n, last=n == end)
            except OSError as exc:  # e.g. removed by a live writer's retention while we read
                self.f.problem("unreadable", layout.seg_stem(n), f"{exc.strerror or exc} (changed while verifying?)")
                self.tree, self.prev, self.last_ck, self.sealed_from = None, None, None, None
        if numbers and closed:
            if max(layout.scan(self.root).numbers(), default=0) > end:  # a live writer rotated meanwhile
                self.f.note("grew", layout.seg_stem(end), "newer segments appeared while verifying (a running "
                                                          "writer); they are checked by the next verify")
            else:
                self.f.problem("ends-closed", layout.seg_stem(end),
                               "the newest segment is closed but no segment follows it (newer segments deleted?)")
        size = self.tree.end if self.tree is not None else self.c["retained_from"] + self.c["events"]
        ck = self.last_ck[0] if self.last_ck else self.sealed
        unsealed = max(0, size - ck)
        if unsealed:
            self.f.problem("unsealed", layout.seg_stem(end),
                           f"{unsealed} events after the last checkpoint (leaves {ck}..{size - 1}) are not sealed")
        for code, where, message in self.events.tally.lines():
            self.f.note(code, where, message)
        summary = Summary(segments=len(numbers), tree_size=size, unsealed=unsealed, origin=self.origin or "",
                          sealed=self.sealed_count, **self.c)
        return Report(str(self.root), tuple(self.f.problems), tuple(self.f.notes), summary, self.f.omitted)

    def _retention(self) -> int:
        """Find the newest retention record of the archive's own; set the starting state from it. Returns the
        first segment. Any other retention record removes nothing and is a problem."""
        found = find_retention(self.listing, self.keys)
        for where, message in found.foreign:
            self.f.problem("foreign-retention", where, message)
        self.origin = found.origin
        if found.chosen is None:
            return 1
        rec = found.chosen.rec
        hi = int(rec["segments"][1])
        where = f"retention of segments {rec['segments'][0]}..{hi}"
        try:
            size = int(rec["size"])
            self.tree = CompactRange.from_frontier(size, unb64_list(rec["frontier"], "frontier"))
            self.prev = str(rec["chain"])
        except (VerifyError, ValueError, KeyError, TypeError) as exc:
            self.f.problem("bad-record", where, f"retention record is malformed: {exc}")
            self.tree, self.prev, self.last_ck, self.sealed_from = None, None, None, None
            return hi + 1
        self.c["retained_from"] = size
        self.sealed = self.sealed_from = size
        self.last_ck = None
        try:
            cp = verify_checkpoint(str(rec.get("checkpoint", "")), self.keys)
            if cp.size != size or cp.root != self.tree.root():
                raise VerifyError("its checkpoint does not match the tree state it carries")
            if cp.origin != self.origin:
                raise VerifyError(f"its checkpoint is of origin {cp.origin!r}, not {self.origin!r}")
            self.last_ck = (size, cp.root)
        except VerifyError as exc:
            self.f.problem("retention-checkpoint", where, str(exc))
        self.f.note("retention", where, f"{size} events removed ({rec.get('reason', '?')}, "
                                        f"{rec.get('removed_bytes', '?')} bytes) at {rec.get('time', '?')}")
        return hi + 1

    def _segment(self, n: int, *, last: bool) -> bool:
        """Check segment ``n``; return whether it is closed."""
        stem = layout.seg_stem(n)
        log, plain, gz = self.listing.logs.get(n), self.listing.events.get(n), self.listing.gz.get(n)
        if log is None and plain is None and gz is None:
            self.f.problem("missing-segment", stem, "segment is missing (deleted or renamed?)")
            self.tree, self.prev, self.last_ck, self.sealed_from = None, None, None, None
            return False
        if plain is not None and gz is not None:
            if hashlib.sha256(layout.read_events(gz)).digest() != hashlib.sha256(plain.read_bytes()).digest():
                self.f.problem("events-conflict", stem, "plain and compressed events files differ")
            else:
                self.f.note("events-twice", stem, "plain and compressed events files both present (identical)")
        ev = SegmentEvents([layout.events_path(self.root, n), layout.gz_path(self.root, n)])
        if ev.missing and last and log is not None and _holds_only_open(log):
            self.f.note("events-not-created", stem, "the newest segment has no events file yet and nothing in it is "
                                                    "sealed (a crash just after a rotation; the next writer makes it)")
        elif ev.missing:
            self.f.problem("missing-events", stem, "events file is missing (deleted or renamed?)")
        closed = False
        if log is None:
            self.f.problem("missing-log", stem, "record log is missing (deleted or renamed?)")
            self.prev, self.last_ck = None, None
        else:
            closed = self._records(n, log, ev, last)
        while (line := ev.next()) is not None:
            self._event(ev, line)
        if ev.error:
            self.f.problem("unreadable", ev.name, ev.error)
        if ev.torn:
            if last and not closed:
                self.f.note("torn-tail", ev.name, f"{len(ev.torn)} bytes of an incomplete last line "
                                                  "(a write in progress, or a crash the writer will cut on restart)")
            else:
                self.f.problem("torn-tail", ev.name, f"{len(ev.torn)} bytes of an incomplete last line")
        if log is not None and not closed and not last:
            self.f.problem("not-closed", log.name, "segment has no close record but a later segment exists")
        return closed

    def _records(self, n: int, log: Path, ev: SegmentEvents, last: bool) -> bool:
        data = log.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail and last:
            self.f.note("torn-tail", log.name, f"{len(tail)} bytes of an incomplete last record (a crash the "
                                               "writer will cut on restart)")
        elif tail:
            self.f.problem("torn-tail", log.name, f"{len(tail)} bytes of an incomplete last record")
        closed = False
        for i, line in enumerate(lines):
            where = f"{log.name}:{i + 1}"
            try:
                rec = parse_record(line)
            except VerifyError as exc:
                self.f.problem("bad-record", where, str(exc))
                self.prev = None
                continue
            if (why := noncanonical(line, rec)) is not None:
                self.f.problem("non-canonical-record", where, why)
            try:
                verify_record(rec, self.keys)
            except VerifyError as exc:
                self.f.problem("record-signature", where, str(exc))
                self.prev = chain_hash(line)
                continue
            if self.prev is not None and rec["prev"] != self.prev:
                self.f.problem("chain", where, "does not follow the previous record (records or segments removed, "
                                               "reordered or replaced)")
            self.prev = chain_hash(line)
            if (why := wrong_segment(n, rec)) is not None:
                self.f.problem("wrong-segment", where, why)
            if closed:
                self.f.problem("after-close", where, f"{rec['kind']} record after the close record")
            try:
                closed = self._record(rec, i, where, ev) or closed
            except (VerifyError, KeyError, TypeError, ValueError) as exc:
                self.f.problem("bad-record", where, f"{rec['kind']} record is malformed: {exc}")
        return closed

    def _record(self, rec: dict[str, Any], i: int, where: str, ev: SegmentEvents) -> bool:
        kind = rec["kind"]
        if kind == "open":
            self._open(rec, i, where)
        elif kind == "checkpoint":
            self._checkpoint(rec, where, ev)
        elif kind == "cut":
            self.c["cuts"] += 1
            self.f.note("cut", where, f"{rec['length']} bytes of a torn last line were cut from {rec['file']} "
                                      f"at offset {rec['offset']} ({rec.get('time', '?')})")
        elif kind == "close":
            self._close(rec, where, ev)
            return True
        elif kind == "stop":
            self.stopped_at = int(rec["size"])
        elif kind == "resume":
            if rec["clean"] is True and self.stopped_at is not None and int(rec["size"]) != self.stopped_at:
                self.f.problem("resume-size", where, f"the writer resumed at {rec['size']} events but stopped "
                                                     f"cleanly at {self.stopped_at}: events added or removed "
                                                     "while it was stopped")
            self.stopped_at = None
            self.events.resume(int(rec["size"]), rec["clean"] is True)
            if rec["clean"] is not True:
                self.f.note("unclean-restart", where, f"the writer restarted after an unclean stop, at event "
                                                      f"{rec['size']} ({rec.get('time', '?')})")
        return False

    def _open(self, rec: dict[str, Any], i: int, where: str) -> None:
        if i != 0:
            self.f.problem("bad-record", where, "an open record that is not the first of its log")
        origin = str(rec["origin"])
        if self.origin is None:
            self.origin = origin
        elif origin != self.origin:
            self.f.problem("origin", where, f"origin {origin!r} differs from {self.origin!r}")
        first, frontier = int(rec["first"]), unb64_list(rec["frontier"], "frontier")
        if self.tree is None:
            pass  # lost after a missing or damaged segment: the signed tree state at this start takes it up again
        elif first != self.tree.end:
            self.f.problem("segment-start", where, f"segment starts at event {first} but {self.tree.end} events "
                                                   "precede it (events or segments removed or added)")
        elif frontier != self.tree.hashes():
            self.f.problem("frontier", where, "the tree state at the segment start does not match the events before")
        else:
            return
        # from here on the events are checked against the checkpoints again, from the tree state signed here;
        # what precedes it and is not here was reported (missing), not to be counted again as unsealed
        self.tree, self.last_ck = CompactRange.from_frontier(first, frontier), None
        self.sealed_from = first
        self.sealed = max(self.sealed, first)

    def _checkpoint(self, rec: dict[str, Any], where: str, ev: SegmentEvents) -> None:
        self.c["checkpoints"] += 1
        try:
            cp = verify_checkpoint(str(rec["note"]), self.keys)
        except VerifyError as exc:
            self.f.problem("checkpoint-signature", where, str(exc))
            return
        if self.origin is not None and cp.origin != self.origin:
            self.f.problem("origin", where, f"checkpoint origin {cp.origin!r} differs from {self.origin!r}")
        if self.last_ck is not None:
            old, old_root = self.last_ck
            proof = unb64_list(rec["consistency"], "consistency")
            if int(rec["prev_size"]) != old:
                self.f.problem("checkpoint-chain", where, f"follows a checkpoint of size {rec['prev_size']}, "
                                                          f"but the previous one has size {old}")
            elif not verify_consistency(old, cp.size, old_root, cp.root, proof):
                self.f.problem("consistency", where, f"checkpoint {cp.size} is not consistent with checkpoint {old}")
        self.last_ck = (cp.size, cp.root)
        if self.tree is None:
            return
        if cp.size < self.tree.end:
            self.f.problem("checkpoint-order", where, f"checkpoint of size {cp.size} after {self.tree.end} events")
            return
        while self.tree is not None and self.tree.end < cp.size and (line := ev.next()) is not None:
            self._event(ev, line)
        if self.tree is None:
            return
        if self.tree.end < cp.size:
            self.f.problem("missing-events", where, f"checkpoint covers {cp.size} events but the archive holds "
                                                    f"{self.tree.end} up to here (events deleted or truncated)")
            self.tree, self.sealed_from = None, None
        elif self.tree.root() != cp.root:
            self.sealed_from = None
            if ev.name not in self.reported_root:
                self.f.problem("root-mismatch", where, f"events do not hash to the signed root at size {cp.size} "
                                                       f"(events before it edited, reordered, added or removed)")
            self.reported_root.add(ev.name)
        else:
            if self.sealed_from is not None:
                self.sealed_count += cp.size - self.sealed_from
            self.sealed = self.sealed_from = cp.size

    def _close(self, rec: dict[str, Any], where: str, ev: SegmentEvents) -> None:
        while (line := ev.next()) is not None:
            self._event(ev, line)
        first, count = int(rec["first"]), int(rec["count"])
        if ev.missing:
            return
        if ev.lineno != count:
            self.f.problem("segment-count", where, f"closed with {count} events, the file holds {ev.lineno}")
        if ev.bytes != int(rec["bytes"]) or ev.sha.digest() != unb64(rec["sha256"], "sha256"):
            self.f.problem("segment-hash", where, "events file differs from what was closed (edited or truncated)")
        if self.last_ck is not None and self.last_ck[0] != first + count:
            self.f.problem("unsealed-close", where, "the segment was closed without a checkpoint at its end")

    def _event(self, ev: SegmentEvents, body: bytes) -> None:
        index = -1
        if self.tree is not None:
            index = self.tree.end
            self.tree.append(leaf_hash(body))
        self.c["events"] += 1
        if self.events.check(f"{ev.name}:{ev.lineno}", body, index):
            self.c["signed_ok"] += 1


def verify_archive(path: str | os.PathLike[str], keys: Mapping[str, VerifyKey],
                   guest_keys: Mapping[str, VerifyKey] | None = None) -> Report:
    """Verify the archive in directory ``path`` against trusted ``keys`` (key id -> key); ``guest_keys`` check
    the guest signatures its events carry, and nothing else."""
    root = Path(path)
    if not root.is_dir():
        raise VerifyError(f"{root}: not a directory")
    return _Verifier(root, keys, guest_keys).run()


def wrong_segment(n: int, rec: Mapping[str, Any]) -> str | None:
    """Why record ``rec``, a line of segment ``n``'s log, is not in the log it was written to (``wrong-segment``:
    its ``seg`` names another); None when it is. ``prove`` relies on no segment that fails this."""
    if rec["seg"] != n:
        return f"record of segment {rec['seg']} found in segment {n} (files renamed?)"
    return None


def _holds_only_open(log: Path) -> bool:
    """Whether a log's complete records are its open record alone (a segment just begun)."""
    try:
        lines = layout.split_tail(log.read_bytes())[0].split(b"\n")[:-1]
        return len(lines) == 1 and parse_record(lines[0])["kind"] == "open"
    except (OSError, VerifyError):
        return False
