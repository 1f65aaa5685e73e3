"""Mount table change events: ``/proc/PID/mountinfo`` signals POLLPRI|POLLERR when its namespace changes.

On each (coalesced) notification the table is read again and compared with
the previous one (:func:`diff_mounts`, pure): one ``change`` reading per mount
``added``, ``removed`` or ``remounted`` (its options changed, read-only or back).
A mount is identified by its mount id, so a remount is told apart from an
unmount followed by a mount. A newly added mount that the probe wants checked
(a remote file system) is handed to ``check`` at once, and the reading that
check returns follows the change reading.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ParseError
from ..hostfs.mounts import MountEntry, MountTable, parse_mount_table
from ..hostfs.reader import read_small
from ..model import Reading
from .source import Emit, WatchOptions, WatchSource

__all__ = ["MountChange", "MountWatchOptions", "MountWatcher", "change_output", "diff_mounts", "watch_mounts"]

#: check a new mount now: the entry, and the mount table it was read from (the reading's input)
Check = Callable[[MountEntry, str], Awaitable[Reading]]


@dataclass(frozen=True, slots=True)
class MountWatchOptions(WatchOptions):
    """``[probes.mounts.watch]`` keys, besides ``enabled`` and ``coalesce``."""

    #: the mount table watched (``/proc/PID/mountinfo`` watches PID's mount namespace)
    mountinfo: str = "/proc/self/mountinfo"
    #: check a newly added remote mount at once (a regular ``mounts`` reading)
    check_new: bool = True

    def __post_init__(self) -> None:
        WatchOptions.__post_init__(self)
        if not self.mountinfo:
            raise ValueError("mountinfo must not be empty")


@dataclass(frozen=True, slots=True)
class MountChange:
    change: str
    entry: MountEntry
    previous: MountEntry | None = None


def _key(e: MountEntry) -> object:
    return e.mount_id if e.mount_id is not None else (e.source, e.target, e.fstype)


def readonly(options: str) -> bool:
    return "ro" in options.split(",")


def diff_mounts(before: Sequence[MountEntry], after: Sequence[MountEntry]) -> list[MountChange]:
    """What changed between two tables, in the order of ``after`` (removals last, in the order of ``before``)."""
    old = {_key(e): e for e in before}
    new_keys = set()
    out: list[MountChange] = []
    for e in after:
        k = _key(e)
        new_keys.add(k)
        prev = old.get(k)
        if prev is None:
            out.append(MountChange("added", e))
        elif (prev.options, prev.super_options) != (e.options, e.super_options):
            out.append(MountChange("remounted", e, prev))
    out.extend(MountChange("removed", e) for e in before if _key(e) not in new_keys)
    return out


def change_output(c: MountChange, coalesced: int = 0) -> dict[str, Any]:
    """The ``output`` of one mount change reading."""
    e, p = c.entry, c.previous
    return {
        "change": c.change, "target": e.target, "source": e.source, "fstype": e.fstype, "options": e.options,
        "super_options": e.super_options, "mount_id": e.mount_id, "readonly": readonly(e.options),
        "previous_options": p.options if p else None,
        "was_readonly": readonly(p.options) if p else None,
        "coalesced": coalesced,
    }


class MountWatcher:
    """The mount table of one namespace, compared on every notification."""

    def __init__(self, source: WatchSource, path: str, *, check: Check | None = None,
                 wants_check: Callable[[MountEntry], bool] = lambda e: False) -> None:
        self.source = source
        self.path = path
        self.check = check
        self.wants_check = wants_check
        self.table: tuple[MountEntry, ...] = ()

    def _read(self) -> MountTable:
        return parse_mount_table(read_small(self.path, limit=64 << 20).decode("utf-8", "surrogateescape"), self.path)

    def start(self) -> bool:
        """Read the first table and watch the file; ``False`` (and an error reading) if it cannot be."""
        try:
            self.table = self._read().entries
            fd = self.source.watch_file("mountinfo", self.path, self._fire)
        except (OSError, ParseError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.source.push(self.source.reading("mountinfo", {}, inputs=(self.path,),
                                                 error=f"mount change events not started: {self.path}: {why}"))
            return False
        return fd is not None

    def _fire(self, count: int) -> list[Reading]:
        try:
            table = self._read().entries
        except (OSError, ParseError) as exc:
            return [self.source.reading("mountinfo", {}, inputs=(self.path,), error=f"{self.path}: {exc}")]
        changes = diff_mounts(self.table, table)
        self.table = table
        out = [self.source.reading(c.entry.target, change_output(c, count - 1), inputs=(self.path,))
               for c in changes]
        if self.check is not None:
            for c in changes:
                if c.change == "added" and self.wants_check(c.entry):
                    self.source.spawn(self._check(c.entry))
        return out

    async def _check(self, entry: MountEntry) -> None:
        assert self.check is not None
        try:
            self.source.push(await self.check(entry, self.path))
        except Exception as exc:  # a failed check is data
            self.source.push(self.source.reading(entry.target, {}, inputs=(self.path,),
                                                 error=f"check of new mount failed: {exc}"))


async def watch_mounts(emit: Emit, options: MountWatchOptions, *, probe: str = "mounts", check: Check | None = None,
                       wants_check: Callable[[MountEntry], bool] = lambda e: False,
                       ready: Callable[[MountWatcher], None] | None = None) -> None:
    """Run the mount change events of ``options.mountinfo`` until cancelled."""
    source = WatchSource(probe, probe_source=f"procfs:{options.mountinfo}", max_watches=1,
                         coalesce=options.coalesce)
    if not await source.open_or_report(emit, "mountinfo", "mount change events"):
        return
    with source:
        watcher = MountWatcher(source, options.mountinfo, check=check if options.check_new else None,
                               wants_check=wants_check)
        watcher.start()
        if ready is not None:
            ready(watcher)
        await source.run(emit)
