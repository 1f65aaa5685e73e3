"""The result of verifying an archive: problems (fail), notes (inform) and totals.

``Report`` has the shape the CLI prints for every kind of verification: ``ok``,
``problems`` (each printed with ``str``), ``summary()`` (the notes, then one verdict
line) and ``as_dict()`` (the ``--json`` form).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Finding", "Findings", "Report", "Summary"]

#: findings kept per report; the rest are only counted
MAX_FINDINGS = 1000


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of a report. ``code`` is stable (for machines), ``message`` is for people."""

    code: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class Summary:
    segments: int = 0
    events: int = 0
    #: events whose signature verified
    signed_ok: int = 0
    #: leaves covered by a checkpoint whose signature verified and whose root matched
    sealed: int = 0
    unsealed: int = 0
    checkpoints: int = 0
    cuts: int = 0
    #: leaves removed by retention before the first kept segment
    retained_from: int = 0
    tree_size: int = 0
    origin: str = ""


@dataclass(slots=True)
class Findings:
    """A bounded collector of problems and notes."""

    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    omitted: int = 0

    def problem(self, code: str, where: str, message: str) -> None:
        self._add(self.problems, Finding(code, where, message))

    def note(self, code: str, where: str, message: str) -> None:
        self._add(self.notes, Finding(code, where, message))

    def _add(self, into: list[Finding], f: Finding) -> None:
        if len(self.problems) + len(self.notes) >= MAX_FINDINGS:
            if into is self.problems:  # counted, so that the summary still tells how many (notes are not)
                self.omitted += 1
                if not any(p.code == "omitted" for p in self.problems):
                    self.problems.append(Finding("omitted", "-", "more problems were left out (counted in the "
                                                                 "summary)"))
            return
        into.append(f)


@dataclass(frozen=True, slots=True)
class Report:
    path: str
    problems: tuple[Finding, ...]
    notes: tuple[Finding, ...]
    totals: Summary
    omitted: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def verdict(self) -> str:
        s = self.totals
        verdict = "OK" if self.ok else "FAILED"
        parts = [f"{verdict}: {_n(s.events, 'event')} in {_n(s.segments, 'segment')}",
                 f"{_n(s.signed_ok, 'signature')} valid", f"{s.sealed} sealed by {_n(s.checkpoints, 'checkpoint')}"]
        if s.unsealed:
            parts.append(f"{s.unsealed} unsealed")
        if s.cuts:
            parts.append(f"{_n(s.cuts, 'torn record')} cut")
        if s.retained_from:
            parts.append(f"{_n(s.retained_from, 'earlier event')} removed by retention")
        problems = sum(p.code != "omitted" for p in self.problems) + self.omitted
        parts.append(_n(problems, "problem"))
        return ", ".join(parts)

    def note_lines(self) -> list[str]:
        return [f"note: {n}" for n in self.notes]

    def summary(self) -> str:
        """One line per note, then the verdict line with the totals."""
        return "\n".join([*self.note_lines(), self.verdict()])

    def lines(self) -> list[str]:
        """One line per problem, one per note, then the verdict."""
        return [str(p) for p in self.problems] + self.summary().split("\n")

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "archive",
            "path": self.path,
            "ok": self.ok,
            "events": self.totals.events,
            "verified": self.totals.signed_ok,
            "summary": asdict(self.totals),
            "problems": [asdict(p) for p in self.problems],
            "notes": [asdict(n) for n in self.notes],
            "omitted": self.omitted,
        }


def _n(count: int, noun: str) -> str:
    """``1 segment``, ``2 segments``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
