"""cgroup v2 change events: ``*.events`` files, PSI triggers, and cgroups coming and going.

Every watched cgroup's flat-keyed notification files (``cgroup.events``,
``memory.events``, ``pids.events``, ... by the ``files`` globs) are watched for
POLLPRI; a notification reads the file again and emits a ``change`` reading
with the new values and the signed difference of what changed. An inotify
watch on every directory reports cgroups created after the start (a
``created`` reading with their first values, then watched like the others) and
removed ones (a ``removed`` reading with their last values, then the watches
are dropped). Configured PSI triggers are registered on each cgroup matching
``psi_paths``; a firing emits a ``pressure`` reading with the current averages.
A periodic rescan (and an inotify queue overflow) reconciles the watches with
the tree, so a missed notification costs at most ``rescan`` seconds.
Readings, fields and units: ``docs/probes.md`` (Change events).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from ..errors import ParseError, ProbeError
from ..hostfs.cgroupfs import parse_cgroup_file
from ..hostfs.parse import parse_psi
from ..model import Reading
from .cgtree import CgroupDirInfo, changed, child_path, matches, walk_dirs
from .inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Inotify,
)
from .psi import PsiTrigger, parse_trigger, refusal
from .source import Emit, WatchOptions, WatchSource, ensure_nofile

__all__ = ["CgroupWatchOptions", "CgroupWatcher", "watch_cgroups"]

_DIR_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR
_READ = 1 << 16
_START_CHUNK = 128


@dataclass(frozen=True, slots=True)
class CgroupWatchOptions(WatchOptions):
    """``[probes.cgroup.watch]`` keys, besides ``enabled`` and ``coalesce``."""

    #: globs of the files watched in each cgroup (flat-keyed files the kernel notifies about)
    files: tuple[str, ...] = ("*.events",)
    #: PSI triggers, each ``"RESOURCE some|full STALL_US WINDOW_US"`` (``"cpu some 150000 2000000"``)
    psi_triggers: tuple[str, ...] = ()
    #: cgroups (globs on paths relative to the root) on which the triggers are registered
    psi_paths: tuple[str, ...] = ("*",)
    #: fds and inotify watches held at most; past it one reading says so and polling covers the rest
    max_watches: int = 4096
    #: seconds between two reconciliations of the watches with the tree (the backstop)
    rescan: float = 60.0
    #: change readings held while the pipeline is busy; the oldest are dropped (and reported) beyond it
    buffer: int = 4096

    def __post_init__(self) -> None:
        WatchOptions.__post_init__(self)
        for text in self.psi_triggers:
            try:
                parse_trigger(text)
            except ValueError as exc:
                raise ValueError(f"psi_triggers: {exc}") from None
        for name in ("max_watches", "buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.rescan > 0:
            raise ValueError("rescan must be greater than 0")


@dataclass(slots=True)
class _File:
    fd: int
    key: str
    path: str
    last: dict[str, Any] | None


@dataclass(slots=True)
class _Cgroup:
    info: CgroupDirInfo
    wd: int | None = None
    files: dict[str, _File] = field(default_factory=dict)
    psi: dict[str, int] = field(default_factory=dict)


class CgroupWatcher:
    """The watches of one cgroup2 tree, driven by a :class:`WatchSource`."""

    def __init__(self, source: WatchSource, root: str, options: CgroupWatchOptions, *,
                 include: Sequence[str] = (), exclude: Sequence[str] = (), max_depth: int | None = None) -> None:
        self.source = source
        self.root = root.rstrip("/") or "/"
        self.options = options
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.max_depth = max_depth
        self.triggers: tuple[PsiTrigger, ...] = tuple(parse_trigger(t) for t in options.psi_triggers)
        self.cgroups: dict[str, _Cgroup] = {}
        self._by_wd: dict[int, str] = {}
        self._told: set[str] = set()
        #: every cgroup path known to exist (watched or not): only a path new to it is announced as created
        self._known: set[str] = set()
        self._ino = Inotify()
        self.rescan_wanted = anyio.Event()
        source.watch_stream(self._ino.fd, self._on_inotify)

    def walk(self, start: str = "/") -> list[CgroupDirInfo]:
        return walk_dirs(self.root, exclude=self.exclude, max_depth=self.max_depth, files=self.options.files,
                         start=start)

    # adding and removing -----------------------------------------------------------------------

    def start(self, dirs: Sequence[CgroupDirInfo]) -> None:
        """Watch ``dirs`` (a fresh walk) without emitting anything: the first values are the baseline."""
        for d in dirs:
            self._known.add(d.path)
            self._add(d, announce=False)

    def _tell_once(self, subject: str, message: str) -> None:
        if message not in self._told:
            self._told.add(message)
            self.source.push(self.source.reading(subject, {}, error=message))

    def _watch_dir(self, cg: _Cgroup) -> bool:
        """Watch ``cg``'s directory for what is created below it, if it is not yet and there is room (without
        room it is known all the same, and a later reconciliation tries again); False when it vanished
        meanwhile or cannot be watched."""
        d = cg.info
        if cg.wd is not None or (self.max_depth is not None and d.depth >= self.max_depth):
            return True
        if not self.source.reserve(f"inotify watch on {d.dir}"):
            return True  # past max_watches (reported once): its creation and removal are still told
        try:
            cg.wd = self._ino.add(d.dir, _DIR_MASK)
        except OSError as exc:
            self.source.release()
            if exc.errno == errno.ENOSPC:
                self._tell_once("/", f"inotify watch limit of the user reached at {d.dir}:"
                                     " raise fs.inotify.max_user_watches")
                return True
            return False  # vanished meanwhile, or not watchable: polling still covers it
        self._by_wd[cg.wd] = d.path
        return True

    def _add(self, d: CgroupDirInfo, *, announce: bool) -> None:
        if d.path in self.cgroups:
            return
        cg = _Cgroup(d)
        if not self._watch_dir(cg):
            return
        self.cgroups[d.path] = cg
        if self.include and not matches(d.path, self.include):
            return
        for name in d.files:
            self._add_file(cg, name)
        if self.triggers and matches(d.path, self.options.psi_paths):
            for trig in self.triggers:
                self._add_trigger(cg, trig)
        if announce:
            out: dict[str, Any] = {"change": "created", "inode": d.inode, "coalesced": 0}
            for f in cg.files.values():
                out[f.key] = f.last
            self.source.push(self.source.reading(d.path, out, inputs=tuple(f.path for f in cg.files.values())))

    def _add_file(self, cg: _Cgroup, name: str) -> None:
        path = f"{cg.info.dir}/{name}"
        f = _File(-1, name.replace(".", "_"), path, None)

        def first(fd: int) -> None:
            text = os.pread(fd, _READ, 0).decode("utf-8", "replace")
            try:
                f.key, f.last = self._parse(name, text, path)
            except ParseError:
                pass  # reported by the first notification that still does not parse

        try:
            fd = self.source.watch_file(("file", cg.info.path, name), path,
                                        lambda n: self._on_file(cg.info.path, name, n), first=first)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._tell_once("/", f"out of file descriptors at {path} ({exc.strerror}): raise the open-files"
                                     " limit (LimitNOFILE=) or lower max_watches")
            return  # otherwise the cgroup went away meanwhile
        if fd is not None:
            f.fd = fd
            cg.files[name] = f

    def _add_trigger(self, cg: _Cgroup, trig: PsiTrigger) -> None:
        path = f"{cg.info.dir}/{trig.file}"
        try:
            fd = self.source.watch_file(("psi", cg.info.path, trig.spec), path,
                                        lambda n: self._on_pressure(cg.info.path, trig, path, n), write=trig.line())
        except OSError as exc:
            if os.path.isdir(cg.info.dir):
                self._tell_once(cg.info.path, refusal(trig, exc))
            return
        if fd is not None:
            cg.psi[trig.spec] = fd

    def _drop(self, cg: _Cgroup) -> None:
        for f in cg.files.values():
            self.source.unwatch(f.fd)
        for fd in cg.psi.values():
            self.source.unwatch(fd)
        if cg.wd is not None:
            self._by_wd.pop(cg.wd, None)
            try:
                self._ino.remove(cg.wd)
            except OSError:
                pass
            self.source.release()

    def _remove(self, path: str) -> None:
        """Final ``removed`` readings for ``path`` and every cgroup below it, deepest first; then drop them."""
        prefix = path.rstrip("/") + "/"
        gone = sorted((p for p in self.cgroups if p == path or p.startswith(prefix)), reverse=True)
        for p in gone:
            cg = self.cgroups.pop(p)
            self._drop(cg)
            if self.include and not matches(p, self.include):
                continue  # watched only to see what is created below it: not reported, as its creation was not
            out: dict[str, Any] = {"change": "removed", "inode": cg.info.inode, "coalesced": 0}
            for f in cg.files.values():
                out[f.key] = f.last
            self.source.push(self.source.reading(p, out, inputs=(cg.info.dir,)))

    def _add_tree(self, path: str) -> None:
        try:
            dirs = self.walk(path)
        except ProbeError:
            return
        for d in dirs:
            self._add(d, announce=d.path not in self._known)
            self._known.add(d.path)

    # notifications -----------------------------------------------------------------------------

    def _on_inotify(self) -> None:
        for ev in self._ino.read():
            if ev.mask & IN_Q_OVERFLOW:
                self.rescan_wanted.set()
                continue
            parent = self._by_wd.get(ev.wd)
            if parent is None:
                continue
            if ev.mask & (IN_DELETE_SELF | IN_IGNORED):
                if parent in self.cgroups:
                    self._remove(parent)
                continue
            if not ev.is_dir:
                continue
            path = child_path(parent, ev.name)
            if self.exclude and matches(path, self.exclude):
                continue
            if ev.mask & (IN_DELETE | IN_MOVED_FROM):
                self._forget_known(path)
                if path in self.cgroups:
                    self._remove(path)
            elif ev.mask & (IN_CREATE | IN_MOVED_TO):
                self._add_tree(path)

    def _forget_known(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        self._known = {p for p in self._known if p != path and not p.startswith(prefix)}

    def _parse(self, name: str, text: str, path: str) -> tuple[str, dict[str, Any]]:
        keys, value = parse_cgroup_file(name, text, path)
        return keys[0], value

    def _on_file(self, cgpath: str, name: str, count: int) -> list[Reading]:
        cg = self.cgroups.get(cgpath)
        f = cg.files.get(name) if cg else None
        if f is None:
            return []
        try:
            text = os.pread(f.fd, _READ, 0).decode("utf-8", "replace")
        except OSError:
            return []  # the cgroup is being removed; inotify brings its final reading
        try:
            key, value = self._parse(name, text, f.path)
        except ParseError as exc:
            return [self.source.reading(cgpath, {}, inputs=(f.path,), error=str(exc))]
        out = {"change": "modified", "file": name, key: value, "deltas": {key: changed(f.last, value)},
               "coalesced": count - 1}
        f.last = value
        return [self.source.reading(cgpath, out, inputs=(f.path,))]

    def _on_pressure(self, cgpath: str, trig: PsiTrigger, path: str, count: int) -> list[Reading]:
        cg = self.cgroups.get(cgpath)
        fd = cg.psi.get(trig.spec) if cg else None
        if fd is None:
            return []
        try:
            psi = parse_psi(os.pread(fd, _READ, 0).decode("utf-8", "replace"), path)
        except OSError:
            return []
        except ParseError as exc:
            return [self.source.reading(cgpath, {}, inputs=(path,), error=str(exc))]
        out = {"change": "pressure", "trigger": trig.as_dict(), "psi": {trig.resource: psi}, "coalesced": count - 1}
        return [self.source.reading(cgpath, out, inputs=(path,))]

    # reconciliation ----------------------------------------------------------------------------

    def reconcile(self, dirs: Sequence[CgroupDirInfo]) -> None:
        """Bring the watches in line with a fresh walk: announce new cgroups, retire vanished ones."""
        if self.rescan_wanted.is_set():
            self.rescan_wanted = anyio.Event()
        seen = {d.path: d for d in dirs}
        self._known &= set(seen)
        for path in sorted(set(self.cgroups) - set(seen), reverse=True):
            if path in self.cgroups:
                self._remove(path)
        for d in dirs:
            cg = self.cgroups.get(d.path)
            if cg is not None and cg.info.inode != d.inode:
                self._remove(d.path)
                cg = None
            if cg is None:
                self._add(d, announce=d.path not in self._known)
                continue
            self._watch_dir(cg)  # refused before for want of room: there may be room now
            if not self.include or matches(d.path, self.include):
                for name in d.files:
                    if name not in cg.files:
                        self._add_file(cg, name)
        self._known = set(seen)

    def close(self) -> None:
        for cg in self.cgroups.values():
            self._drop(cg)
        self.cgroups.clear()
        self._ino.close()


async def watch_cgroups(emit: Emit, root: str, options: CgroupWatchOptions, *, probe: str = "cgroup",
                        include: Sequence[str] = (), exclude: Sequence[str] = (), max_depth: int | None = None,
                        ready: Callable[[CgroupWatcher], None] | None = None) -> None:
    """Run the change events of ``root`` until cancelled. ``ready`` is called once the first watches are set."""
    source = WatchSource(probe, probe_source=f"cgroup2:{root}", max_watches=options.max_watches,
                         coalesce=options.coalesce, buffer=options.buffer)
    ensure_nofile(options.max_watches + 1024)
    if not await source.open_or_report(emit, "/", "cgroup change events"):
        return
    with source:
        try:
            watcher = CgroupWatcher(source, root, options, include=include, exclude=exclude, max_depth=max_depth)
        except OSError as exc:
            await emit(source.reading("/", {}, error=f"cgroup change events not started: inotify: {exc.strerror}"))
            return
        try:
            try:
                dirs = await anyio.to_thread.run_sync(watcher.walk)
            except ProbeError as exc:
                await emit(source.reading("/", {}, error=f"cgroup change events not started: {exc}"))
                return
            for i in range(0, len(dirs), _START_CHUNK):  # a large tree is set up without holding the loop
                watcher.start(dirs[i:i + _START_CHUNK])
                await anyio.sleep(0)
            if ready is not None:
                ready(watcher)
            async with anyio.create_task_group() as tg:
                tg.start_soon(source.run, emit)
                while True:
                    with anyio.move_on_after(options.rescan):
                        await watcher.rescan_wanted.wait()
                    try:
                        dirs = await anyio.to_thread.run_sync(watcher.walk)
                    except ProbeError as exc:
                        source.push(source.reading("/", {}, error=f"cgroup rescan: {exc}"))
                        continue
                    watcher.reconcile(dirs)
        finally:
            watcher.close()
