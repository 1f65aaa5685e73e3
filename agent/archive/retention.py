"""Retention: which oldest closed segments go, and the record that keeps the rest verifiable.

Only a prefix of the closed segments is ever removed. The retention record
states the removed range and carries what a verifier needs to start at the
first kept segment as if it had read everything before: the tree size and
frontier there, the record-chain hash the first kept record continues from,
and the signed checkpoint at that size (the one written when the last removed
segment was closed). The record is written (and synced) before any file goes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import layout
from .recovery import fsync_dir, read_records

__all__ = ["Plan", "plan", "record_fields", "remove"]


@dataclass(frozen=True, slots=True)
class Plan:
    numbers: list[int]
    removed_bytes: int
    reason: str


def plan(root: Path, current: int, max_bytes: int, max_age: float, now: float) -> Plan:
    """The oldest closed segments to remove so the archive fits ``max_bytes`` and ``max_age``."""
    listing = layout.scan(root)
    closed = [n for n in listing.numbers() if n < current and n in listing.logs]
    sizes = {n: listing.segment_bytes(n) for n in listing.numbers()}
    total = sum(sizes.values())
    out: list[int] = []
    removed, reasons = 0, set()
    for n in closed:
        too_big = bool(max_bytes) and total > max_bytes
        too_old = bool(max_age) and listing.logs[n].stat().st_mtime < now - max_age
        if not (too_big or too_old):
            break
        if out and n != out[-1] + 1:
            break
        out.append(n)
        total -= sizes[n]
        removed += sizes[n]
        reasons.add("retain_bytes" if too_big else "retain_age")
    return Plan(out, removed, ",".join(sorted(reasons)))


def record_fields(root: Path, p: Plan) -> dict[str, Any]:
    """The retention record for removing ``p.numbers`` (read from the segments around the cut)."""
    hi = p.numbers[-1]
    _lines, kept = read_records(layout.log_path(root, hi + 1))
    head = kept[0]
    _lines, gone = read_records(layout.log_path(root, hi))
    notes = [r["note"] for r in gone if r["kind"] == "checkpoint"]
    return {
        "kind": "retention",
        "segments": [p.numbers[0], hi],
        "size": head["first"],
        "frontier": head["frontier"],
        "chain": head["prev"],
        "checkpoint": notes[-1] if notes else "",
        "removed_bytes": p.removed_bytes,
        "reason": p.reason,
    }


def remove(root: Path, numbers: list[int], sync: bool) -> None:
    for n in numbers:
        for path in (layout.events_path(root, n), layout.gz_path(root, n), layout.log_path(root, n)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    if sync:
        fsync_dir(root)
