"""Finding containers by their mount namespaces, for the ``mounts`` probe.

Every process whose ``/proc/PID/ns/mnt`` differs from the agent's own lives in
another mount namespace. One process stands for each namespace (the lowest
pid, normally the container's init). A namespace counts as a container when
a runtime can be named from the process's cgroup path, or when its root mount
is not the agent's: systemd services with private ``/tmp`` get namespaces of
their own too, but they share the host's root and are left out. Kernel
threads are left out. Only text is read here (``ns/mnt`` links, ``stat``,
``cgroup``, ``mountinfo``, the parent's ``cmdline``, ``environ``); no path
inside a container is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ParseError
from ..hostfs.mounts import (
    PF_KTHREAD,
    ContainerHint,
    MountEntry,
    MountTable,
    hint_from_cgroup,
    hint_from_parent_argv,
    parse_mount_table,
    parse_ns_link,
    parse_stat_parent,
    root_mount,
    runtime_from_environ,
    same_root,
)
from ..hostfs.reader import read_small

__all__ = ["ForeignNamespace", "NamespaceScan", "scan_namespaces"]


@dataclass(frozen=True, slots=True)
class ForeignNamespace:
    """A container's mount namespace, the process that stands for it and its mounts."""

    mntns: int
    pid: int
    hint: ContainerHint | None
    table: MountTable
    #: the file its mounts were read from
    source: str


@dataclass(frozen=True, slots=True)
class NamespaceScan:
    own_mntns: int | None
    containers: tuple[ForeignNamespace, ...]
    #: foreign namespaces left out (sandboxed services sharing the host root, kernel threads)
    skipped: int
    #: namespaces that could not be read, with the reason
    errors: tuple[str, ...]


def _text(path: str) -> str:
    """A namespace's mount table (as large as the mounts probe reads the host's)."""
    return read_small(path, 16 << 20).decode("utf-8", "surrogateescape")


def _ns_of(proc: str, pid: str) -> int | None:
    try:
        return parse_ns_link(os.readlink(f"{proc}/{pid}/ns/mnt"))
    except OSError:
        return None


def _root_of(proc: str, pid: str) -> MountEntry | None:
    try:
        return root_mount(parse_mount_table(_text(f"{proc}/{pid}/mountinfo")).entries)
    except (OSError, ParseError):
        return None


def _hint(proc: str, pid: int, ppid: int) -> ContainerHint | None:
    try:
        hint = hint_from_cgroup(_text(f"{proc}/{pid}/cgroup"))
    except OSError:
        hint = None
    if hint is not None and hint.name is not None:
        return hint
    try:
        argv = read_small(f"{proc}/{ppid}/cmdline").decode("utf-8", "replace").rstrip("\0").split("\0")
        parent = hint_from_parent_argv(argv)
    except OSError:
        parent = None
    if parent is not None:
        return ContainerHint(runtime=parent.runtime, id=hint.id if hint else None, name=parent.name)
    if hint is not None:
        return hint
    try:
        runtime = runtime_from_environ(read_small(f"{proc}/{pid}/environ"))
    except OSError:
        runtime = None
    return ContainerHint(runtime=runtime) if runtime else None


def scan_namespaces(proc: str = "/proc") -> NamespaceScan:
    """The containers visible in ``proc`` (a procfs mount, or a fixture tree shaped like one)."""
    own = _ns_of(proc, "self")
    lowest: dict[int, int] = {}
    try:
        names = os.listdir(proc)
    except OSError as exc:
        return NamespaceScan(own, (), 0, (f"{proc}: {exc.strerror or exc}",))
    for name in names:
        if not name.isdigit():
            continue
        ns = _ns_of(proc, name)
        if ns is None or ns == own:
            continue
        pid = int(name)
        if pid < lowest.get(ns, pid + 1):
            lowest[ns] = pid
    own_root = _root_of(proc, "self")
    found: list[ForeignNamespace] = []
    skipped = 0
    errors: list[str] = []
    for ns, pid in sorted(lowest.items(), key=lambda kv: kv[1]):
        source = f"{proc}/{pid}/mountinfo"
        try:
            ppid, flags = parse_stat_parent(_text(f"{proc}/{pid}/stat"))
            if flags & PF_KTHREAD:
                skipped += 1
                continue
            hint = _hint(proc, pid, ppid)
            table = parse_mount_table(_text(source), source=source)
        except FileNotFoundError:  # the process ended meanwhile
            continue
        except (OSError, ParseError) as exc:
            errors.append(f"mnt:[{ns}] pid {pid}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if hint is None and same_root(root_mount(table.entries), own_root):
            skipped += 1
            continue
        found.append(ForeignNamespace(mntns=ns, pid=pid, hint=hint, table=table, source=source))
    return NamespaceScan(own, tuple(found), skipped, tuple(errors))
