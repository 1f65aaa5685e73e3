"""``/proc/lve/list`` (CloudLinux LVE accounting): pure parser and net-accounting summary.

The file is a header line naming the columns, optionally prefixed with the
format version (``10:LVE<TAB>lCPU<TAB>...<TAB>NETO<TAB>NETI``), then one row per
LVE. Newer kernels separate cells with tabs and may leave a cell empty (the
system LVE has no CPU limit), so tab-separated text is split on tabs; text
without tabs is split on runs of blanks. An LVE id is ``lvp,uid`` (reseller
container, user) or a bare ``uid``.

Net accounting follows the original collector exactly: rows of the root LVE
(0) and of the default LVE (``UINT_MAX``) and of ``skip_user_ids`` do not
count; rows that do not parse are skipped; a missing or empty file, or a
header without both ``NETO`` and ``NETI``, means "not supported" and zeros.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .parse import MAX_DIGITS

__all__ = [
    "DEFAULT_LVE",
    "LveRow",
    "LveTable",
    "NetAcct",
    "net_acct",
    "parse_lve_list",
]

#: the default LVE (``UINT_MAX``): limits template, never a user
DEFAULT_LVE = 0xFFFFFFFF
#: the root LVE
ROOT_LVE = 0


@dataclass(frozen=True, slots=True)
class LveRow:
    """One LVE: its id and every numeric cell by column name (empty cells are 0)."""

    lvp: int
    uid: int
    values: dict[str, int]

    @property
    def neto(self) -> int:
        return self.values.get("NETO", 0)

    @property
    def neti(self) -> int:
        return self.values.get("NETI", 0)


@dataclass(frozen=True, slots=True)
class LveTable:
    """A parsed file: format ``version`` (``None`` without a prefix), column names, rows."""

    version: int | None
    columns: tuple[str, ...]
    rows: tuple[LveRow, ...]
    skipped: int = 0

    @property
    def has_net(self) -> bool:
        return "NETO" in self.columns and "NETI" in self.columns


def _split(line: str, tabbed: bool) -> list[str]:
    return [c.strip() for c in line.split("\t")] if tabbed else line.split()


def _decimal(cell: str) -> int:
    """A cell of ASCII digits as its number; ValueError for anything else (``int()`` alone would take a sign,
    ``_`` separators, spaces and non-ASCII digits)."""
    if not (cell.isascii() and cell.isdigit()):
        raise ValueError(f"not a decimal integer: {cell!r}")
    if len(cell) > MAX_DIGITS:
        raise ValueError(f"a value of {len(cell)} digits (at most {MAX_DIGITS} are read)")
    return int(cell, 10)


def _parse_id(cell: str) -> tuple[int, int] | None:
    lvp_text, sep, uid_text = cell.partition(",")
    if not sep:
        lvp_text, uid_text = "0", cell
    try:
        return _decimal(lvp_text), _decimal(uid_text)
    except ValueError:
        return None


def parse_lve_list(text: str) -> LveTable:
    """Parse the file; never raises for bad rows (they are counted in ``skipped``).

    A row is skipped when its cell count differs from the header's, its id is
    not ``lvp,uid``/``uid`` or was listed before, or a cell is not a decimal
    integer (empty is 0).
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return LveTable(None, (), ())
    header = lines[0]
    tabbed = "\t" in header
    columns = _split(header, tabbed)
    version: int | None = None
    prefix, sep, first = columns[0].partition(":")
    if sep:
        try:
            version = int(prefix, 10)
        except ValueError:
            version = None
        columns[0] = first
    if "LVE" not in columns:
        return LveTable(version, tuple(columns), (), skipped=len(lines) - 1)
    id_col = columns.index("LVE")
    rows: list[LveRow] = []
    seen: set[tuple[int, int]] = set()
    skipped = 0
    for line in lines[1:]:
        cells = _split(line, tabbed)
        ident = _parse_id(cells[id_col]) if len(cells) == len(columns) else None
        if ident is None or ident in seen:  # an LVE listed twice: the first row stands
            skipped += 1
            continue
        seen.add(ident)
        values: dict[str, int] = {}
        try:
            for i, (name, cell) in enumerate(zip(columns, cells, strict=True)):
                if i != id_col:
                    values[name] = _decimal(cell) if cell else 0
        except ValueError:
            skipped += 1
            continue
        rows.append(LveRow(ident[0], ident[1], values))
    return LveTable(version, tuple(columns), tuple(rows), skipped)


@dataclass(frozen=True, slots=True)
class NetAcct:
    """The five net-accounting metrics of the original collector."""

    kernel_supported: int = 0
    lves_total: int = 0
    lves_with_traffic: int = 0
    total_neto_bytes: int = 0
    total_neti_bytes: int = 0

    def as_output(self) -> dict[str, int]:
        return {
            "net_acct_kernel_supported": self.kernel_supported,
            "net_acct_lves_total": self.lves_total,
            "net_acct_lves_with_traffic": self.lves_with_traffic,
            "net_acct_total_neto_bytes": self.total_neto_bytes,
            "net_acct_total_neti_bytes": self.total_neti_bytes,
        }


def counted(row: LveRow, skip_user_ids: Collection[int] = ()) -> bool:
    """Whether a row counts: not root, not the default LVE, not a skipped user."""
    return row.uid not in (ROOT_LVE, DEFAULT_LVE) and row.uid not in skip_user_ids


def net_acct(table: LveTable, skip_user_ids: Collection[int] = ()) -> NetAcct:
    """Summarise a table; unsupported (no NETO/NETI columns) gives all zeros."""
    if not table.has_net:
        return NetAcct()
    rows = [r for r in table.rows if counted(r, skip_user_ids)]
    return NetAcct(
        kernel_supported=1,
        lves_total=len(rows),
        lves_with_traffic=sum(1 for r in rows if r.neto > 0 or r.neti > 0),
        total_neto_bytes=sum(r.neto for r in rows),
        total_neti_bytes=sum(r.neti for r in rows),
    )
