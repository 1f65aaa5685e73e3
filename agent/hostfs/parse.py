"""Pure parsers of cgroup v2 and /proc text: one function per file kind.

Every function takes the text of one file and returns plain data (dicts of
ints and floats, or frozen dataclasses); none of them opens a file. A value
that does not parse raises :class:`~agent.errors.ParseError` whose message
names ``source`` (the file the caller read) and the line.

File kinds:

* flat-keyed (``memory.events``, ``cpu.stat``, ``pids.events``,
  ``cgroup.events``, ``cgroup.stat``): ``key value`` lines ->
  :func:`parse_flat_keyed`;
* single value (``memory.current``, ``memory.max``, ``pids.max``): one integer,
  or the word ``max`` for "no limit" -> :func:`parse_single_value`;
* pressure stall information (``cpu.pressure``, ``memory.pressure``,
  ``io.pressure``): ``some``/``full`` lines of ``avgN=`` and ``total=`` ->
  :func:`parse_psi`;
* ``/proc/PID/mountinfo`` -> :func:`parse_mountinfo`, with
  :func:`find_cgroup2_mount` to pick the cgroup v2 hierarchy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ParseError

__all__ = [
    "UNLIMITED",
    "MountInfo",
    "find_cgroup2_mount",
    "parse_flat_keyed",
    "parse_mountinfo",
    "parse_psi",
    "parse_single_value",
    "unescape_mount_field",
]

#: the word cgroup v2 writes for "no limit" in single-value files
UNLIMITED = "max"
#: the most digits a counter may have (a 64-bit counter has 20; beyond a few thousand Python refuses to convert)
MAX_DIGITS = 1000


def _where(source: str, lineno: int) -> str:
    return f"{source or '<text>'}:{lineno}"


def _to_int(value: str, source: str, lineno: int, key: str) -> int:
    """A counter as the kernel writes it: ASCII decimal digits only (``int()`` alone would also take a sign,
    ``_`` separators and other scripts' digits)."""
    if value.isascii() and value.isdigit():
        if len(value) > MAX_DIGITS:
            raise ParseError(f"{_where(source, lineno)}: value of {len(value)} digits for {key!r} (at most "
                             f"{MAX_DIGITS} are read)")
        return int(value, 10)
    raise ParseError(f"{_where(source, lineno)}: non-numeric value {value[:40]!r} for {key!r}")


def _is_decimal(value: str) -> bool:
    """Plain ASCII digits with at most one ``.`` between them (as the kernel writes a PSI average)."""
    whole, _, frac = value.partition(".")
    return value.isascii() and whole.isdigit() and (frac.isdigit() or value == whole)


def parse_flat_keyed(text: str, source: str = "") -> dict[str, int]:
    """``key value`` lines -> ``{key: int}``.

    Blank lines are ignored. A line that is not exactly two fields, a repeated
    key, or a value that is not a decimal integer is a :class:`ParseError`.
    """
    # fast path for well-formed text; anything unusual is re-parsed slowly for an exact message
    lines = text.splitlines()
    try:
        fast = {key: int(value) for key, value in (line.split() for line in lines)
                if value.isdigit() and value.isascii() and len(value) <= MAX_DIGITS}
    except ValueError:
        pass
    else:
        if len(fast) == len(lines):
            return fast
    return _flat_keyed_checked(lines, source)


def _flat_keyed_checked(lines: list[str], source: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ParseError(f"{_where(source, lineno)}: expected 'key value', got {line[:80]!r}")
        key, value = parts
        if key in out:
            raise ParseError(f"{_where(source, lineno)}: key {key!r} repeated")
        out[key] = _to_int(value, source, lineno, key)
    return out


def parse_single_value(text: str, source: str = "") -> int | None:
    """One integer; ``max`` (no limit) -> ``None``."""
    parts = text.split()
    if len(parts) != 1:
        raise ParseError(f"{_where(source, 1)}: expected one value, got {text.strip()[:80]!r}")
    if parts[0] == UNLIMITED:
        return None
    return _to_int(parts[0], source, 1, "value")


_PSI_LINES = ("some", "full")
#: a PSI average is a share of time in percent (the kernel writes 0.00 to 100.00)
MAX_PERCENT = 100.0
_PSI_AVERAGES = ("avg10", "avg60", "avg300")


def parse_psi(text: str, source: str = "") -> dict[str, dict[str, float | int]]:
    """A pressure file -> ``{"some": {...}, "full": {...}}``.

    ``avg10``/``avg60``/``avg300`` are percentages (finite floats); ``total`` is
    the cumulative stall time in microseconds (int). Only the lines present
    appear (``full`` is absent from ``cpu.pressure`` on kernels before 5.13).
    """
    out: dict[str, dict[str, float | int]] = {}
    try:  # fast path for the kernel's exact layout; anything else is parsed slowly, with exact messages
        for line in text.splitlines():
            kind, a10, a60, a300, total = line.split()
            if (kind not in _PSI_LINES or kind in out or a10[:6] != "avg10=" or a60[:6] != "avg60="
                    or a300[:7] != "avg300=" or total[:6] != "total=" or not line.isascii()
                    or not total[6:].isdigit() or len(total) > 6 + MAX_DIGITS):
                raise ValueError(line)
            avg10, avg60, avg300 = float(a10[6:]), float(a60[6:]), float(a300[7:])
            if not (_is_decimal(a10[6:]) and _is_decimal(a60[6:]) and _is_decimal(a300[7:])
                    and max(avg10, avg60, avg300) <= MAX_PERCENT):
                raise ValueError(line)
            out[kind] = {"avg10": avg10, "avg60": avg60, "avg300": avg300, "total": int(total[6:])}
        return out
    except ValueError:
        return _psi_checked(text, source)


def _psi_checked(text: str, source: str) -> dict[str, dict[str, float | int]]:
    out: dict[str, dict[str, float | int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        kind = parts[0]
        if kind not in _PSI_LINES:
            raise ParseError(f"{_where(source, lineno)}: expected 'some' or 'full', got {kind[:40]!r}")
        if kind in out:
            raise ParseError(f"{_where(source, lineno)}: line {kind!r} repeated")
        fields: dict[str, float | int] = {}
        for token in parts[1:]:
            key, sep, value = token.partition("=")
            if not sep or not key:
                raise ParseError(f"{_where(source, lineno)}: expected key=value, got {token[:40]!r}")
            if key in fields:
                raise ParseError(f"{_where(source, lineno)}: {key!r} repeated")
            if key == "total":
                fields[key] = _to_int(value, source, lineno, key)
            elif key in _PSI_AVERAGES:
                if not _is_decimal(value):
                    raise ParseError(f"{_where(source, lineno)}: non-numeric value {value[:40]!r} for {key!r}")
                if (number := float(value)) > MAX_PERCENT:
                    raise ParseError(f"{_where(source, lineno)}: {key} {value[:40]!r} is not a percentage")
                fields[key] = number
            # a field this agent does not know (a newer kernel's) is left out
        missing = [k for k in (*_PSI_AVERAGES, "total") if k not in fields]
        if missing:
            raise ParseError(f"{_where(source, lineno)}: {kind!r} line has no {'=, '.join(missing)}=")
        out[kind] = {k: fields[k] for k in (*_PSI_AVERAGES, "total")}
    return out


@dataclass(frozen=True, slots=True)
class MountInfo:
    """One line of ``/proc/PID/mountinfo`` (see proc(5)), escapes decoded."""

    mount_id: int
    parent_id: int
    major_minor: str
    root: str
    mount_point: str
    options: str
    optional: tuple[str, ...]
    fstype: str
    source: str
    super_options: str


_ESCAPE = re.compile(rb"\\([0-3][0-7]{2})")


def unescape_mount_field(field: str) -> str:
    """Undo the kernel's octal escapes (``\\040`` space, ``\\011`` tab, ``\\012``, ``\\134``). Each stands
    for one byte of the name: escapes of bytes beyond ASCII decode together, as UTF-8 (``\\303\\251`` is
    ``é``), and a byte that is no UTF-8 stays the surrogate a raw one in the table reads as. ``\\400`` and up
    are no byte, and stay as written."""
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", "surrogateescape")
    return _ESCAPE.sub(lambda m: bytes((int(m.group(1), 8),)), raw).decode("utf-8", "surrogateescape")


def parse_mountinfo(text: str, source: str = "") -> list[MountInfo]:
    """Every line of a mountinfo file; a malformed line is a :class:`ParseError`."""
    out: list[MountInfo] = []
    for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines: a path may hold \x1c, \x85 ...
        if not line.strip():
            continue
        parts = line.split(" ")
        try:
            sep = parts.index("-", 6)
        except ValueError:
            raise ParseError(f"{_where(source, lineno)}: no ' - ' separator in mountinfo line") from None
        if sep + 3 > len(parts):
            raise ParseError(f"{_where(source, lineno)}: mountinfo line ends after the separator")
        try:
            mount_id, parent_id = int(parts[0]), int(parts[1])
        except ValueError:
            raise ParseError(f"{_where(source, lineno)}: mount ids are not integers") from None
        out.append(MountInfo(
            mount_id=mount_id,
            parent_id=parent_id,
            major_minor=parts[2],
            root=unescape_mount_field(parts[3]),
            mount_point=unescape_mount_field(parts[4]),
            options=parts[5],
            optional=tuple(parts[6:sep]),
            fstype=parts[sep + 1],
            source=unescape_mount_field(parts[sep + 2]),
            super_options=" ".join(parts[sep + 3:]),
        ))
    return out


#: where the unified hierarchy lives on a pure cgroup v2 host (the contract's default)
DEFAULT_CGROUP2 = "/sys/fs/cgroup"


def find_cgroup2_mount(mounts: Iterable[MountInfo]) -> str | None:
    """The mount point of the cgroup v2 hierarchy, or ``None`` if there is none.

    Preference: ``/sys/fs/cgroup`` itself when it is cgroup2 (unified mode);
    then the first cgroup2 mount of the whole hierarchy (root ``/``; e.g.
    ``/sys/fs/cgroup/unified`` in hybrid mode); then any cgroup2 mount.
    """
    found = [m for m in mounts if m.fstype == "cgroup2"]
    for m in found:
        if m.mount_point == DEFAULT_CGROUP2:
            return m.mount_point
    for m in found:
        if m.root == "/":
            return m.mount_point
    return found[0].mount_point if found else None
