"""Inclusion proof bundles: one event, its audit path, and the signed checkpoint it leads to.

``make_proof(DIR, EVENT_ID)`` finds the event in the archive and proves it
against the newest checkpoint; ``check_proof(bundle, keys)`` needs nothing but
the bundle and the trusted keys. The bundle is a JSON object::

    {"format": "hoststamp-inclusion-proof/v1", "event": "<the event line>",
     "index": 41, "size": 1000, "proof": ["<base64>", ...], "checkpoint": "<signed note>"}

``event`` is the archived line itself (UTF-8 JSON text, no newline), so its
leaf hash is ``SHA-256(0x00 || UTF-8(event))``.

The prover starts where ``verify`` does: after the archive's own retention
record (:mod:`.ownership`), and refuses, naming what is wrong, an archive
holding a retention record that is not its own, a segment of another origin
(another archive's records or segments copied in), or a segment log holding a
record of another segment (a segment copied in under another number).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import VerifyError
from ..signing.event import verify_event
from ..signing.keys import VerifyKey
from . import layout
from .layout import ArchiveError
from .merkle import CompactRange, NodeTable, inclusion_proof, leaf_hash, verify_inclusion
from .note import parse_checkpoint, verify_checkpoint
from .ownership import Keys, find_retention, log_origin
from .records import b64_list, parse_record, unb64_list
from .verify import wrong_segment

__all__ = ["FORMAT", "ProofCheck", "check_proof", "dump_proof", "load_proof", "make_proof", "verify_proof_file",
           "write_proof"]

FORMAT = "hoststamp-inclusion-proof/v1"
MAX_BUNDLE = 4 << 20


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in layout.split_tail(path.read_bytes())[0].split(b"\n")[:-1]:
        try:
            out.append(parse_record(line))
        except VerifyError:
            continue
    return out


_TAMPERED = "the archive was changed (run verify); no proof written"


def _start(listing: layout.Listing, keys: Keys) -> tuple[int, CompactRange, str | None]:
    """First segment to read, the tree before it (after the archive's own newest retention record, as
    ``verify`` takes it), and the archive's origin. An archive holding a retention record that is not its own,
    or a segment of another origin from there on, is refused, naming it."""
    found = find_retention(listing, keys)
    if found.foreign:
        where, message = found.foreign[0]
        more = f" (and {len(found.foreign) - 1} more such records)" if len(found.foreign) > 1 else ""
        raise ArchiveError(f"{where}: {message}{more}; {_TAMPERED}")
    first, tree = 1, CompactRange(0)
    if found.chosen is not None:
        rec = found.chosen.rec
        try:
            tree = CompactRange.from_frontier(int(rec["size"]), unb64_list(rec["frontier"], "frontier"))
        except (VerifyError, ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"{found.chosen.where}: the retention record is malformed: {exc}; "
                               f"{_TAMPERED}") from None
        first = int(rec["segments"][1]) + 1
    for n in sorted(listing.logs):
        if n >= first and (other := log_origin(listing.logs[n], keys)) is not None and other != found.origin:
            raise ArchiveError(f"segment {layout.seg_stem(n)} belongs to another archive (its origin is {other!r}, "
                               f"this archive's is {found.origin!r}; copied in?); {_TAMPERED}")
    return first, tree, found.origin


def _placed(listing: layout.Listing, first: int) -> None:
    """Refuse, naming the first, a record in the log of a segment from ``first`` on that names another segment
    as its own (``verify``'s ``wrong-segment``: a segment copied or renamed in under another number, whose
    checkpoints and events are not where the tree has them)."""
    found: list[str] = []
    for n in sorted(listing.logs):
        if n < first:
            continue
        lines = layout.split_tail(listing.logs[n].read_bytes())[0].split(b"\n")[:-1]
        for i, line in enumerate(lines):
            try:
                why = wrong_segment(n, parse_record(line))
            except VerifyError:
                continue  # not a record at all (verify reports it): it names no segment
            if why is not None:
                found.append(f"{listing.logs[n].name}:{i + 1}: wrong-segment: {why}")
    if found:
        more = f" (and {len(found) - 1} more such records)" if len(found) > 1 else ""
        raise ArchiveError(f"{found[0]}{more}; {_TAMPERED}")


def _newest_checkpoint(listing: layout.Listing, first: int, origin: str | None) -> str:
    """The newest checkpoint of the archive's segments from ``first`` on; one of another origin is refused."""
    for n in sorted((n for n in listing.logs if n >= first), reverse=True):
        notes = [r["note"] for r in _records(listing.logs[n]) if r["kind"] == "checkpoint"]
        if notes:
            note = str(notes[-1])
            cp_origin = parse_checkpoint(note).origin
            if origin is not None and cp_origin != origin:
                raise ArchiveError(f"the newest checkpoint, in {listing.logs[n].name}, is of origin {cp_origin!r}, "
                                   f"not this archive's {origin!r}; {_TAMPERED}")
            return note
    raise ArchiveError("the archive has no checkpoint yet")


def _matches(body: bytes, event_id: str, source: str | None) -> bool:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and doc.get("id") == event_id and (source is None or doc.get("source") == source)


def make_proof(path: str | os.PathLike[str], event_id: str, *, source: str | None = None, at: int | None = None,
               copies: list[int] | None = None, keys: Keys = None) -> dict[str, Any]:
    """The inclusion proof bundle of event ``event_id`` (and ``source``, if ids repeat across sources).

    The same event may be archived more than once (at-least-once delivery: a copy sent again after a lost ack
    is stamped again). The first copy is proved, or the one at leaf ``at``; ``copies``, when given, is
    filled with the leaf index of every copy. ``keys``: the trusted keys which records must be signed by to
    count as the archive's own (None: signatures are left to whoever checks the bundle).
    """
    root = Path(path)
    listing = layout.scan(root)
    first_seg, tree, origin = _start(listing, keys)
    _placed(listing, first_seg)
    note = _newest_checkpoint(listing, first_seg, origin)
    checkpoint = parse_checkpoint(note)
    size = checkpoint.size
    needle = event_id.encode()
    found: list[tuple[int, bytes, str]] = []
    # once the event is found: the tree before it, its leaf, and the leaves after it up to the checkpoint
    left: CompactRange | None = None
    leaf: tuple[int, int, bytes] | None = None
    right: CompactRange | None = None
    chosen: bytes | None = None
    index = tree.end
    for n in range(first_seg, max(listing.numbers(), default=0) + 1):
        seg = listing.events.get(n) or listing.gz.get(n)
        if seg is None:
            raise ArchiveError(f"segment {layout.seg_stem(n)} is missing; run verify")
        for raw in layout.iter_lines(seg):
            if index >= size or not raw.endswith(b"\n"):
                break
            body = raw[:-1]
            h = leaf_hash(body)
            match = needle in body and _matches(body, event_id, source)
            if match:
                found.append((index, body, str(orjson.loads(body).get("source"))))
            if leaf is None and match and (at is None or index == at):
                left, leaf, right, chosen = tree, (index, index + 1, h), CompactRange(index + 1), body
            elif right is not None:
                right.append(h)
            else:
                tree.append(h)
            index += 1
    if copies is not None:
        copies[:] = [i for i, _b, _s in found]
    if not found:
        raise ArchiveError(f"no sealed event with id {event_id!r} in {root} (checkpoint size {size})")
    sources = sorted({s for _i, _b, s in found})
    if len(sources) > 1 and (at is None or chosen is None):  # a leaf named by its index is one event
        raise ArchiveError(f"{len(found)} events have id {event_id!r} (sources: {', '.join(sources)}); "
                           "name the source")
    if at is not None and chosen is None:
        leaves = ", ".join(str(i) for i, _b, _s in found)
        raise ArchiveError(f"leaf {at} is not event {event_id!r} (its copies are leaves {leaves})")
    if index < size or left is None or leaf is None or right is None or chosen is None:
        raise ArchiveError(f"the checkpoint covers {size} events but the archive holds {index}; run verify")
    idx, body = leaf[0], chosen
    proof = inclusion_proof(idx, size, NodeTable(left, [leaf], right))
    if not verify_inclusion(leaf[2], idx, size, proof, checkpoint.root):
        # the events as they are now do not make the tree the checkpoint signed: no proof of them can hold
        raise ArchiveError(f"the archived events do not match the checkpoint of {size} events (changed after they "
                           "were sealed?); no proof written, run verify")
    return {"format": FORMAT, "event": body.decode("utf-8"), "index": idx, "size": size,
            "proof": b64_list(proof), "checkpoint": note}


def dump_proof(bundle: Mapping[str, Any]) -> bytes:
    return orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n"


def load_proof(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_BUNDLE + 1)
    except OSError as exc:
        raise ArchiveError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BUNDLE:
        raise ArchiveError(f"{p}: too large for a proof bundle")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ArchiveError(f"{p}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ArchiveError(f"{p}: not a JSON object")
    return doc


@dataclass(frozen=True, slots=True)
class ProofCheck:
    problems: tuple[str, ...]
    event_id: str | None
    index: int | None
    size: int | None
    origin: str | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"problem: {p}" for p in self.problems]
        if self.ok:
            out.append(f"OK: event {self.event_id} is leaf {self.index} of the {self.size}-event tree "
                       f"signed by {self.origin}")
        else:
            out.append(f"FAILED: {len(self.problems)} problem{'' if len(self.problems) == 1 else 's'}")
        return out

    def summary(self) -> str:
        return self.lines()[-1]

    def verdict(self) -> str:
        return self.summary()

    def note_lines(self) -> list[str]:
        return []

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": list(self.problems), "id": self.event_id, "index": self.index,
                "size": self.size, "origin": self.origin}


def check_proof(bundle: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> ProofCheck:
    """Check a proof bundle offline: checkpoint signature, audit path to its root, event signature."""
    problems: list[str] = []
    event, index, size = bundle.get("event"), bundle.get("index"), bundle.get("size")
    if bundle.get("format") != FORMAT:
        return ProofCheck((f"not a {FORMAT} bundle",), None, None, None, None)
    if not isinstance(event, str) or not isinstance(index, int) or not isinstance(size, int):
        return ProofCheck(("bundle lacks event, index or size",), None, None, None, None)
    event_id: str | None = None
    try:
        doc = orjson.loads(event)
        event_id = str(doc.get("id")) if isinstance(doc, dict) else None
        if not isinstance(doc, dict):
            raise VerifyError("the event is not a JSON object")
        verify_event(doc, keys)
    except (orjson.JSONDecodeError, VerifyError) as exc:
        problems.append(f"event: {exc}")
    origin = None
    try:
        cp = verify_checkpoint(str(bundle.get("checkpoint", "")), keys)
        origin = cp.origin
        proof = unb64_list(bundle.get("proof"), "proof")
        if cp.size != size:
            problems.append(f"proof is for a tree of {size} events, the checkpoint for {cp.size}")
        elif not verify_inclusion(leaf_hash(event.encode()), index, size, proof, cp.root):
            problems.append("the audit path does not lead from the event to the checkpoint's root")
    except VerifyError as exc:
        problems.append(f"checkpoint: {exc}")
    return ProofCheck(tuple(problems), event_id, index, size, origin)


def write_proof(archive: str | os.PathLike[str], event_id: str, *, source: str | None = None,
                at: int | None = None, copies: list[int] | None = None, keys: Keys = None) -> bytes:
    """``hoststamp prove``: the bundle of one event, as the bytes of a JSON file."""
    return dump_proof(make_proof(archive, event_id, source=source, at=at, copies=copies, keys=keys))


def verify_proof_file(path: str | os.PathLike[str], keys: Mapping[str, VerifyKey]) -> ProofCheck:
    """``hoststamp verify --proof FILE``."""
    return check_proof(load_proof(path), keys)
