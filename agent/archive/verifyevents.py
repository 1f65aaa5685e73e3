"""The event lines of an archive, as ``verify`` checks each: JSON, signature, audit, per-source sequence.

:class:`EventChecks` is the verifier's event side (:mod:`.verify` walks the
segments and the tree): it reports into the verifier's :class:`~.report.Findings`
and keeps what the sequence rule needs across segments, namely each source's
last number and where the writer last resumed (the first event of a source after
a resume may jump forward: a note, not a problem).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from ..codec.exact import duplicate_name
from ..errors import VerifyError
from ..signing.audit import Tally, audit
from ..signing.checker import EventChecker
from ..signing.keys import VerifyKey
from .report import Findings

__all__ = ["EventChecks"]


class EventChecks:
    """Checks of each event line; :meth:`check` says whether its signature verified."""

    def __init__(self, f: Findings, keys: Mapping[str, VerifyKey],
                 guest_keys: Mapping[str, VerifyKey] | None = None) -> None:
        self.f, self.keys, self.guest_keys = f, keys, guest_keys
        #: one checker for the whole archive: its caches, and the native check of the common case
        self.checker = EventChecker(keys)
        #: notes of what the events' signatures do not cover, each once
        self.tally = Tally()
        self.seq: dict[str, int] = {}
        #: the tree size at the last resume (a writer opening the archive again), whether the writer before it
        #: stopped cleanly, and the sources seen since
        self.resumed_from: int | None = None
        self.resumed_clean = True
        self.seen_since: set[str] = set()

    def resume(self, size: int, clean: bool) -> None:
        """A writer opened the archive again at ``size`` leaves (``clean``: after a clean stop)."""
        self.resumed_from, self.seen_since, self.resumed_clean = size, set(), clean

    def check(self, where: str, body: bytes, index: int) -> bool:
        """Check the event line ``body`` (leaf ``index``, -1 when the tree is lost) found at ``where``; return
        whether its signature verified."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self.f.problem("bad-event", where, f"not JSON: {exc}")
            return False
        if not isinstance(doc, dict):
            self.f.problem("bad-event", where, "not a JSON object")
            return False
        if (name := duplicate_name(body)) is not None:
            self.f.problem("duplicate-name", where, f"member name {name!r} appears twice in one object (readers "
                                                    "disagree on which value counts; nothing signed both)")
            return False
        try:
            event = self.checker.verify(doc)
        except VerifyError as exc:
            self.f.problem("event-signature", where, f"id={doc.get('id')}: {exc}")
            return False
        for finding in audit(doc, event, self.guest_keys):  # its signature holds: its sequence is still followed
            if finding.problem:
                self.f.problem(finding.code, where, f"id={doc.get('id')}: {finding.message}")
            else:
                self.tally.add(where, finding)
        source, seq_text = event.get("source"), event.get("sequence")
        if isinstance(source, str) and isinstance(seq_text, str) and seq_text.isdigit():
            self._sequence(where, source, int(seq_text), index)
        return True

    def _sequence(self, where: str, source: str, seq: int, index: int) -> None:
        prev = self.seq.get(source)
        self.seq[source] = seq
        first_since_resume = False
        if self.resumed_from is not None and index >= self.resumed_from and source not in self.seen_since:
            self.seen_since.add(source)
            first_since_resume = True
        if prev is None or seq == prev + 1:
            return
        if seq > prev and first_since_resume and not self.resumed_clean:
            self.f.note("sequence-gap-after-crash", where, f"{source}: sequence {prev} then {seq}: numbers "
                                                           "reserved or events lost by the writer that crashed")
        elif seq > prev and first_since_resume:
            self.f.note("sequence-gap-between-runs", where, f"{source}: sequence {prev} then {seq}: numbered "
                                                            "while the archive was closed (events of a run that "
                                                            "wrote to other sinks only)")
        elif seq <= prev:
            self.f.problem("sequence-order", where, f"{source}: sequence {seq} after {prev}")
        else:
            self.f.problem("sequence-gap", where, f"{source}: sequence {prev} then {seq} ({seq - prev - 1} missing)")
