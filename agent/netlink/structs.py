"""``struct taskstats`` and ``struct cgroupstats``: layouts and decoding (sans-IO).

The kernel sends ``sizeof(struct taskstats)`` of its own version. Versions 1 to
14 only appended fields (version 2 also moved the delay counters from offset 8
to 16), so every member that fits in the payload is decoded at its fixed
offset. Version 15 inserted ``*_delay_max``/``*_delay_min`` after each delay
total (and broke older readers); version 16 moved them to the end of the
version-14 layout. A version newer than 16 is decoded with the version-16
layout as far as the payload goes, and :attr:`TaskStats.note` says so. Member
names are the kernel's (``include/uapi/linux/taskstats.h``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from ..errors import ParseError

__all__ = [
    "CGROUPSTATS_FIELDS",
    "KNOWN_VERSION",
    "TS_COMM_LEN",
    "CgroupStats",
    "Field",
    "TaskStats",
    "layout",
    "pack_taskstats",
    "taskstats_fields",
    "unpack_cgroupstats",
    "unpack_taskstats",
]

KNOWN_VERSION = 16
TS_COMM_LEN = 32


class Field(NamedTuple):
    """One member of ``struct taskstats``: struct code, forced alignment, first version."""

    name: str
    code: str
    align: int
    since: int


_U16 = struct.Struct("=H")
_DELAYS = ("cpu", "blkio", "swapin", "freepages", "thrashing", "compact", "wpcopy", "irq")


def _f(names: str, code: str, since: int, align: int = 0) -> list[Field]:
    out = [Field(n, code, 0, since) for n in names.split()]
    if align:
        out[0] = out[0]._replace(align=align)
    return out


def _base() -> list[Field]:
    """Members up to version 14, in order."""
    return [
        *_f("version", "H", 1),
        *_f("ac_exitcode", "I", 2),
        *_f("ac_flag", "B", 2),
        *_f("ac_nice", "b", 2),  # a __u8 holding task_nice(): decoded signed, -20..19
        *_f("cpu_count cpu_delay_total blkio_count blkio_delay_total swapin_count swapin_delay_total"
            " cpu_run_real_total cpu_run_virtual_total", "Q", 1, align=8),
        Field("ac_comm", f"{TS_COMM_LEN}s", 0, 2),
        Field("ac_sched", "B", 8, 2),
        Field("ac_pad", "3x", 0, 2),
        *_f("ac_uid ac_gid ac_pid ac_ppid ac_btime", "I", 2, align=8),
        *_f("ac_etime ac_utime ac_stime ac_minflt ac_majflt coremem virtmem hiwater_rss hiwater_vm"
            " read_char write_char read_syscalls write_syscalls", "Q", 2, align=8),
        *_f("read_bytes write_bytes cancelled_write_bytes", "Q", 3),
        *_f("nvcsw nivcsw", "Q", 4),
        *_f("ac_utimescaled ac_stimescaled cpu_scaled_run_real_total", "Q", 5),
        *_f("freepages_count freepages_delay_total", "Q", 7),
        *_f("thrashing_count thrashing_delay_total", "Q", 9),
        *_f("ac_btime64", "Q", 10),
        *_f("compact_count compact_delay_total", "Q", 11),
        *_f("ac_tgid", "I", 12),
        *_f("ac_tgetime ac_exe_dev ac_exe_inode", "Q", 12, align=8),
        *_f("wpcopy_count wpcopy_delay_total", "Q", 13),
        *_f("irq_count irq_delay_total", "Q", 14),
    ]


def _v16() -> list[Field]:
    tail = [Field(f"{d}_delay_{m}", "Q", 0, 16) for d in _DELAYS for m in ("max", "min")]
    return _base() + tail


def _v15() -> list[Field]:
    """Version 15: each ``X_delay_max``/``X_delay_min`` right after ``X_delay_total``."""
    out: list[Field] = []
    for f in _base():
        out.append(f)
        if f.name.endswith("_delay_total"):
            d = f.name[: -len("_delay_total")]
            out += [Field(f"{d}_delay_max", "Q", 0, 15), Field(f"{d}_delay_min", "Q", 0, 15)]
    return out


def _v1() -> list[Field]:
    """Version 1 (Linux 2.6.18): six bytes of padding after ``version``, then the delay counters."""
    delays = [f for f in _base() if f.since == 1 and f.name != "version"]
    return [*_f("version", "H", 1), Field("ac_pad", "6x", 0, 1), *delays]


_LAYOUTS: dict[int, list[Field]] = {1: _v1(), 15: _v15(), 16: _v16()}


def layout(version: int) -> list[Field]:
    """The members of ``struct taskstats`` as this version lays them out, in order."""
    if version in _LAYOUTS:
        return _LAYOUTS[version]
    return [f for f in _LAYOUTS[16] if f.since <= version] if 1 < version < 16 else _LAYOUTS[16 if version else 1]


def taskstats_fields(version: int = KNOWN_VERSION) -> list[str]:
    """Names of the decoded members of this version (padding left out)."""
    return [f.name for f in layout(version) if f.name != "ac_pad"]


def _offsets(fields: Sequence[Field]) -> list[tuple[Field, int, int]]:
    """``(field, offset, end)`` for each member, with C alignment rules."""
    out = []
    off = 0
    for f in fields:
        size = struct.calcsize("=" + f.code)
        natural = 1 if f.code.endswith(("s", "x")) else size
        a = max(natural, f.align)
        off = (off + a - 1) // a * a
        out.append((f, off, off + size))
        off += size
    return out


class TaskStats(tuple[int | bytes, ...]):
    """One decoded ``struct taskstats``: a tuple of its members, cheap to build on the hot path.

    ``self[i]`` is the member named ``names[i]`` (the kernel's names), in
    struct order, as :mod:`struct` gives them: integers, and ``ac_comm`` as its
    32 raw bytes. :attr:`fields` and :meth:`get` give ``ac_comm`` as text (cut
    at the first NUL, invalid UTF-8 replaced). Each (version, size) the kernel
    sends gets its own subclass carrying ``names`` and ``note``; ``note`` is set
    when the version is newer than this decoder or the payload shorter than
    that version's struct.
    """

    __slots__ = ()
    names: ClassVar[tuple[str, ...]] = ()
    note: ClassVar[str | None] = None

    @property
    def version(self) -> int:
        """The struct version the kernel reported (always the first member)."""
        return int(self[0])

    @property
    def fields(self) -> dict[str, int | str]:
        """Member name to value, ``ac_comm`` as text."""
        return {n: _text(v) if isinstance(v, bytes) else v for n, v in zip(self.names, self, strict=True)}

    def get(self, name: str, default: int | str | None = None) -> int | str | None:
        """One member by name (``ac_comm`` as text), or ``default`` if this version lacks it."""
        try:
            v = self[self.names.index(name)]
        except ValueError:
            return default
        return _text(v) if isinstance(v, bytes) else v

    def __repr__(self) -> str:
        return f"TaskStats(version={self.version}, ac_pid={self.get('ac_pid')}, ac_comm={self.get('ac_comm')!r})"


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class _Plan(NamedTuple):
    """How to decode one (version, size): one struct for every member that fits, and the class of the result."""

    st: struct.Struct
    cls: type[TaskStats]


_PLANS: dict[tuple[int, int], _Plan] = {}


def _plan(version: int, size: int) -> _Plan:
    """A struct decoding every member of ``version``'s layout that fits in ``size`` bytes."""
    plan = _PLANS.get((version, size))
    if plan is not None:
        return plan
    placed = _offsets(layout(min(version, KNOWN_VERSION)))
    fits = [p for p in placed if p[2] <= size and not p[0].code.endswith("x")]
    note = None
    if version > KNOWN_VERSION:
        note = (f"struct taskstats version {version} is newer than this decoder ({KNOWN_VERSION});"
                f" decoded the version-{KNOWN_VERSION} fields of {size} bytes")
    elif len(fits) < sum(1 for p in placed if not p[0].code.endswith("x")):
        note = f"struct taskstats version {version} payload of {size} bytes is short; decoded the fields that fit"
    fmt = "="
    pos = 0
    for f, off, end in fits:
        fmt += "x" * (off - pos) + f.code
        pos = end
    names = tuple(p[0].name for p in fits)
    cls = type(f"TaskStats{version}", (TaskStats,), {"__slots__": (), "names": names, "note": note})
    plan = _Plan(struct.Struct(fmt), cls)
    if len(_PLANS) < 256:  # sizes come from the kernel; keep the cache bounded anyway
        _PLANS[(version, size)] = plan
    return plan


_new = tuple.__new__


def unpack_taskstats(buf: bytes, offset: int = 0, size: int | None = None, version: int | None = None) -> TaskStats:
    """Decode a ``struct taskstats`` of ``size`` bytes (default: the rest of ``buf``) at ``offset``.

    ``version`` may be passed when the caller has already read it (the hot path of query replies).
    """
    n = len(buf) - offset if size is None else size
    if n < 2 or offset + n > len(buf):
        raise ParseError(f"struct taskstats of {n} bytes does not fit")
    if version is None:
        version = int(_U16.unpack_from(buf, offset)[0])
    plan = _PLANS.get((version, n)) or _plan(version, n)
    return _new(plan.cls, plan.st.unpack_from(buf, offset))


def pack_taskstats(values: dict[str, int | str], version: int = KNOWN_VERSION, size: int | None = None) -> bytes:
    """Encode ``values`` (missing members are 0) with ``version``'s layout; for fixtures and tests."""
    placed = _offsets(layout(min(version, KNOWN_VERSION)))
    total = placed[-1][2] if placed else 0
    total = (total + 7) // 8 * 8
    out = bytearray(size if size is not None else total)
    for f, off, end in placed:
        if f.code.endswith("x") or end > len(out):
            continue
        v = values.get(f.name, version if f.name == "version" else 0)
        if f.code.endswith("s"):
            struct.pack_into("=" + f.code, out, off, str(v or "").encode())
        else:
            struct.pack_into("=" + f.code, out, off, v)
    return bytes(out)



CGROUPSTATS_FIELDS = ("nr_sleeping", "nr_running", "nr_stopped", "nr_uninterruptible", "nr_io_wait")
_CGROUPSTATS = struct.Struct("=5Q")


@dataclass(frozen=True, slots=True)
class CgroupStats:
    """``struct cgroupstats``: task counts by state in one cgroup (v1)."""

    nr_sleeping: int
    nr_running: int
    nr_stopped: int
    nr_uninterruptible: int
    nr_io_wait: int

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in CGROUPSTATS_FIELDS}


def unpack_cgroupstats(value: bytes) -> CgroupStats:
    """Decode the value of a ``CGROUPSTATS_TYPE_CGROUP_STATS`` attribute."""
    if len(value) < _CGROUPSTATS.size:
        raise ParseError(f"struct cgroupstats of {len(value)} bytes, expected {_CGROUPSTATS.size}")
    return CgroupStats(*_CGROUPSTATS.unpack_from(value))
