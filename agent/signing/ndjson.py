"""Verify a stream of NDJSON events: one problem per bad line, and a summary."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from ..codec.exact import duplicate_name
from ..errors import VerifyError
from .audit import Tally, audit
from .checker import EventChecker
from .keys import VerifyKey

__all__ = ["MAX_LINE", "LongLine", "Problem", "Report", "bounded_lines", "verify_lines"]

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Problem:
    where: str
    reason: str
    event_id: str | None = None

    def __str__(self) -> str:
        ident = f" id={self.event_id}" if self.event_id else ""
        return f"{self.where}:{ident} {self.reason}"


#: problems listed at most; the rest are counted (a file of a million bad lines is one screen, not a million)
MAX_PROBLEMS = 1000


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(slots=True)
class Report:
    #: what was read: a file's name, or ``<stdin>``
    path: str = "-"
    events: int = 0
    verified: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: problems beyond :data:`MAX_PROBLEMS`, counted only
    omitted: int = 0
    #: what is worth knowing but no failure (an attribute the signature does not cover, a guest signature not
    #: checked), each message once with how many events it concerns
    notes: Tally = field(default_factory=Tally)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.omitted += 1

    def verdict(self) -> str:
        total = len(self.problems) + self.omitted
        unlisted = f" ({self.omitted} not listed)" if self.omitted else ""
        return (f"{'OK' if self.ok else 'FAILED'}: {_n(self.events, 'event')}, {self.verified} verified, "
                f"{_n(total, 'problem')}{unlisted}")

    def note_lines(self) -> list[str]:
        return [f"note: {where}: {message}" for _code, where, message in self.notes.lines()]

    def summary(self) -> str:
        """The notes, then the verdict line."""
        return "\n".join([*self.note_lines(), self.verdict()])

    def as_dict(self) -> dict[str, object]:
        """The report as ``verify --json`` prints it; what an archive's report has too (``kind``, ``path``,
        ``ok``, ``events``, ``verified``, ``problems`` with ``where`` and ``message``, ``notes``, ``omitted``)
        means the same in both."""
        return {
            "kind": "file",
            "path": self.path,
            "ok": self.ok,
            "events": self.events,
            "verified": self.verified,
            "problems": [{"where": p.where, "id": p.event_id, "reason": p.reason, "message": p.reason}
                         for p in self.problems],
            "omitted": self.omitted,
            "notes": [{"code": code, "where": where, "message": message}
                      for code, where, message in self.notes.lines()],
        }


#: the longest line ``verify`` reads (a JSON batch of many events included); a longer one is a problem, skipped
#: without being held in memory
MAX_LINE = 64 << 20


class LongLine(bytes):
    """Stands for a line longer than the limit, which was not read: its length."""

    size: int = 0


def bounded_lines(f: BinaryIO, limit: int = MAX_LINE, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The lines of ``f`` (newline kept off), each at most ``limit`` bytes; a longer one is a :class:`LongLine`
    with its length, its bytes dropped as they are read."""
    pending = bytearray()
    skipped = -1  # bytes of an over-long line so far (-1: none being skipped)
    while data := f.read(chunk):
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            piece = data[start:nl]
            start = nl + 1
            if skipped >= 0:
                yield _long(skipped + len(piece))
                skipped = -1
            elif len(pending) + len(piece) > limit:
                yield _long(len(pending) + len(piece))
                pending.clear()
            else:
                yield bytes(pending) + piece if pending else piece
                pending.clear()
        rest = data[start:]
        if skipped >= 0:
            skipped += len(rest)
        elif len(pending) + len(rest) > limit:
            skipped = len(pending) + len(rest)
            pending.clear()
        else:
            pending += rest
    if skipped >= 0:
        yield _long(skipped)
    elif pending:
        yield bytes(pending)


def _long(size: int) -> LongLine:
    line = LongLine()
    line.size = size
    return line


def verify_lines(lines: Iterable[bytes], keys: Mapping[str, VerifyKey], *, name: str = "-",
                 guest_keys: Mapping[str, VerifyKey] | None = None) -> Report:
    """Verify every non-blank line; sequence numbers must rise per source within the stream.

    Generous in what it reads: a UTF-8 byte order mark before the first line is skipped, CRLF line ends are
    fine, and a line holding a JSON array (the CloudEvents JSON batch format) counts each event in it. A
    stream with no event at all is a problem: an empty (or emptied) file proves nothing, so it does not pass.
    """
    report = Report(path=name)
    last_seq: dict[str, int] = {}
    checker = EventChecker(keys)  # one for the stream: its caches, and the native check of the common case
    for lineno, raw in enumerate(lines, 1):
        if isinstance(raw, LongLine):
            report.events += 1
            report.add(Problem(f"{name}:{lineno}", f"line of {raw.size} bytes is longer than {MAX_LINE} bytes "
                                                   "(no event is that large): not read"))
            continue
        line = raw.strip()
        if lineno == 1 and line.startswith(_BOM):
            line = line[len(_BOM):].strip()
        if not line:
            continue
        where = f"{name}:{lineno}"
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            report.events += 1
            report.add(Problem(where, f"not JSON: {exc}"))
            continue
        if (dup := duplicate_name(line)) is not None:
            report.events += len(doc) if isinstance(doc, list) else 1
            report.add(Problem(where, f"member name {dup!r} appears twice in one object (readers disagree on "
                                      "which value counts; nothing signed both)"))
            continue
        if isinstance(doc, list):
            for i, item in enumerate(doc):
                _verify_one(report, last_seq, item, f"{where}[{i}]", checker, guest_keys)
        else:
            _verify_one(report, last_seq, doc, where, checker, guest_keys)
    if report.events == 0:
        report.add(Problem(name, "no events to verify"))
    return report


def _verify_one(report: Report, last_seq: dict[str, int], doc: object, where: str,
                checker: EventChecker, guest_keys: Mapping[str, VerifyKey] | None) -> None:
    report.events += 1
    if not isinstance(doc, dict):
        report.add(Problem(where, "not a JSON object"))
        return
    ev_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    try:
        verified = checker.verify(doc)
    except VerifyError as exc:
        report.add(Problem(where, str(exc), ev_id))
        return
    failed = False
    for finding in audit(doc, verified, guest_keys):  # its signature holds: its sequence is still followed
        if finding.problem:
            report.add(Problem(where, finding.message, ev_id))
            failed = True
        else:
            report.notes.add(where, finding)
    seq_text, source = verified.get("sequence"), verified.get("source")
    if isinstance(seq_text, str) and isinstance(source, str) and seq_text.isdigit():
        seq = int(seq_text)
        prev = last_seq.get(source)
        if prev is not None and seq <= prev:
            report.add(Problem(where, f"sequence {seq} does not follow {prev} for {source}", ev_id))
            return
        last_seq[source] = seq
    if not failed:
        report.verified += 1
