"""``lve``: CloudLinux LVE network accounting from ``/proc/lve/list``.

One summary reading (subject ``net_acct``) with the original collector's five
metrics and their exact semantics (see :mod:`agent.hostfs.lve`). With
``per_lve = true`` it adds one reading per LVE (subject ``lve/<lvp>,<uid>``)
with its byte counters and their deltas, limited to the ``top_n`` LVEs with
the most traffic. Field by field: ``docs/probes.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio.to_thread

from ..errors import ProbeError
from ..hostfs import DeltaTracker, HostFS, LveRow, LveTable, net_acct, parse_lve_list
from ..hostfs.lve import counted
from ..model import Reading
from .base import Probe, ProbeContext
from .registry import register

__all__ = ["LveOptions", "LveProbe"]


@dataclass(frozen=True, slots=True)
class LveOptions:
    """``[probes.lve]`` keys."""

    #: the LVE accounting file
    path: str = "/proc/lve/list"
    #: user ids left out of every count (besides root 0 and the default LVE 4294967295)
    skip_user_ids: tuple[int, ...] = ()
    #: also one reading per LVE, with deltas
    per_lve: bool = False
    #: with per_lve: only the N LVEs with the most traffic (0: all)
    top_n: int = 0

    def __post_init__(self) -> None:
        if not self.path or "\0" in self.path:
            raise ValueError("path must be a path (not empty, no NUL character)")
        if self.top_n < 0:
            raise ValueError("top_n must be 0 (all) or more")
        if any(uid < 0 or uid > 0xFFFFFFFF for uid in self.skip_user_ids):
            raise ValueError("skip_user_ids must be user ids (0 to 4294967295)")


#: the most of /proc/lve/list read (a row is 100 to 300 bytes: room for a few hundred thousand LVEs)
MAX_LIST_BYTES = 64 << 20


def _fs(path: str) -> HostFS:
    """Where ``path`` is read from: a relative one from the working directory, as every configured path is."""
    return HostFS("/" if path.startswith("/") else ".")


def _read(path: str) -> str | None:
    """The file's text, or ``None`` if it does not exist."""
    try:
        return _fs(path).read_text(path, MAX_LIST_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProbeError(f"{path}: {exc.strerror or exc}") from None


@register
class LveProbe(Probe):
    name: ClassVar[str] = "lve"
    Options: ClassVar[type[Any]] = LveOptions
    carried: ClassVar[tuple[str, ...]] = ("_deltas",)

    def __init__(self, options: LveOptions, ctx: ProbeContext | None = None) -> None:
        super().__init__(options, ctx or ProbeContext())
        self._deltas = DeltaTracker()

    @classmethod
    def unavailable(cls, options: Any) -> str | None:
        if not _fs(options.path).exists(options.path):
            return f"{options.path} does not exist (not a CloudLinux LVE kernel)"
        return None

    def provenance(self) -> tuple[str, tuple[str, ...]]:
        return f"procfs:{self.options.path}", (self.options.path,)

    async def collect(self) -> Sequence[Reading]:
        o: LveOptions = self.options
        text = await anyio.to_thread.run_sync(_read, o.path)
        now = time.time()
        table = parse_lve_list(text or "")
        skip = frozenset(o.skip_user_ids)
        source = f"procfs:{o.path}"
        summary: dict[str, Any] = dict(net_acct(table, skip).as_output())
        summary["format_version"] = table.version
        summary["rows_skipped"] = table.skipped
        readings = [Reading(probe=self.name, subject="net_acct", output=summary, inputs=(o.path,),
                            probe_source=source, time=now)]
        if o.per_lve and table.has_net:
            readings.extend(self._per_lve(table, skip, now, source))
        return readings

    def _per_lve(self, table: LveTable, skip: frozenset[int], now: float, source: str) -> list[Reading]:
        o: LveOptions = self.options
        rows: list[tuple[str, LveRow, dict[str, Any] | None]] = []
        for row in table.rows:
            if not counted(row, skip):
                continue
            key = f"lve/{row.lvp},{row.uid}"
            counters = {"neto_bytes": row.neto, "neti_bytes": row.neti}
            rows.append((key, row, self._deltas.update(key, counters, now)))
        self._deltas.retain(key for key, _, _ in rows)

        def traffic(item: tuple[str, LveRow, dict[str, Any] | None]) -> tuple[int, int]:
            _, row, d = item
            recent = (d.get("neto_bytes", 0) + d.get("neti_bytes", 0)) if d else 0
            return recent, row.neto + row.neti

        rows.sort(key=traffic, reverse=True)
        if o.top_n:
            rows = rows[: o.top_n]
        out: list[Reading] = []
        for rank, (key, row, d) in enumerate(rows, 1):
            output = {"lvp": row.lvp, "uid": row.uid, "neto_bytes": row.neto, "neti_bytes": row.neti,
                      "rank": rank, "deltas": d}
            out.append(Reading(probe=self.name, subject=key, output=output, inputs=(o.path,),
                               probe_source=source, time=now))
        return out
