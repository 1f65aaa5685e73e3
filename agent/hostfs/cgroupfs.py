"""cgroup v2: walk a hierarchy, read each leaf's files, parse them into one dict.

Three layers, usable apart (the poller uses all three; a watcher that is told
*which* file changed needs only :func:`parse_cgroup_file`):

* :func:`parse_cgroup_file` / :func:`parse_cgroup_leaf` - pure: file name and
  text in, output fragment out;
* :func:`walk_cgroups` - the leaves under a root, with include/exclude globs
  and a depth limit;
* :func:`scan_cgroups` - walk, read and parse in one synchronous call, so that
  an async caller spends one worker-thread hop on a whole scan.

A leaf that disappears while it is read, or whose file does not parse, becomes
a :class:`LeafScan` with ``error`` set; the other leaves are unaffected.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ..errors import ParseError, ProbeError
from .parse import parse_flat_keyed, parse_psi, parse_single_value
from .reader import read_small

__all__ = [
    "COUNTER_KEYS",
    "FLAT_FILES",
    "LEAF_FILES",
    "PSI_FILES",
    "SINGLE_FILES",
    "CgroupDir",
    "LeafScan",
    "parse_cgroup_file",
    "parse_cgroup_leaf",
    "path_matches",
    "read_leaf",
    "scan_cgroups",
    "walk_cgroups",
]

#: flat-keyed counter files -> output key
FLAT_FILES: Mapping[str, str] = {
    "memory.events": "memory_events",
    "cpu.stat": "cpu_stat",
    "pids.events": "pids_events",
}
#: single-value files -> output key (``max`` becomes ``None``)
SINGLE_FILES: Mapping[str, str] = {"memory.current": "memory_current", "memory.max": "memory_max"}
#: pressure files -> key under ``psi``
PSI_FILES: Mapping[str, str] = {"cpu.pressure": "cpu", "memory.pressure": "memory", "io.pressure": "io"}
#: every file a poll reads per leaf
LEAF_FILES: tuple[str, ...] = (*FLAT_FILES, *SINGLE_FILES, *PSI_FILES)
#: output keys whose integers are cumulative counters (the ones with deltas)
COUNTER_KEYS: tuple[str, ...] = ("memory_events", "cpu_stat", "pids_events", "psi")


def parse_cgroup_file(name: str, text: str, source: str = "") -> tuple[tuple[str, ...], Any]:
    """Parse one cgroup file by its name.

    Returns the output key path and the value: ``(("cpu_stat",), {...})``,
    ``(("memory_max",), None)``, ``(("psi", "io"), {...})``. Any other
    ``*.events`` / ``*.stat`` file is flat-keyed under its name with dots
    turned into underscores (``cgroup.events`` -> ``cgroup_events``).
    """
    source = source or name
    if name in PSI_FILES:
        return ("psi", PSI_FILES[name]), parse_psi(text, source)
    if name in SINGLE_FILES:
        return (SINGLE_FILES[name],), parse_single_value(text, source)
    key = FLAT_FILES.get(name)
    if key is None:
        if not name.endswith((".events", ".events.local", ".stat")):
            raise ParseError(f"{source}: no parser for cgroup file {name!r}")
        key = name.replace(".", "_")
    return (key,), parse_flat_keyed(text, source)


def parse_cgroup_leaf(files: Mapping[str, str], dirpath: str = "") -> dict[str, Any]:
    """``{file name: text}`` of one cgroup -> its output dict (keys only for files given)."""
    out: dict[str, Any] = {}
    for name, text in files.items():
        keys, value = parse_cgroup_file(name, text, f"{dirpath}/{name}" if dirpath else name)
        if len(keys) == 1:
            out[keys[0]] = value
        else:
            out.setdefault(keys[0], {})[keys[1]] = value
    return out


@dataclass(frozen=True, slots=True)
class CgroupDir:
    """One cgroup directory: ``path`` relative to the root (``/`` for the root), absolute ``dir``."""

    path: str
    dir: str
    inode: int
    depth: int


@dataclass(frozen=True, slots=True)
class LeafScan:
    """The result for one leaf: parsed ``output``, or ``error``."""

    path: str
    inode: int
    inputs: tuple[str, ...]
    output: dict[str, Any] | None
    error: str | None = None


def path_matches(path: str, globs: Sequence[str]) -> bool:
    """Whether the cgroup ``path`` (relative to the root, as ``/system.slice/foo.service``) matches one of
    ``globs``: each is matched against the path as it is, and one that does not start with ``/`` also against
    the path without its leading ``/`` (``system.slice/*``), so both spellings of a relative path work and a
    glob such as ``*/init.scope`` keeps matching ``/init.scope``."""
    rel = path.lstrip("/")
    return any(fnmatchcase(path, g) or (g[:1] != "/" and fnmatchcase(rel, g)) for g in globs)


def walk_cgroups(root: str, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 max_depth: int | None = None, limit: int | None = None, files: Sequence[str] = LEAF_FILES,
                 ) -> tuple[list[CgroupDir], list[tuple[str, str]]]:
    """Leaves under ``root``, and what cannot be read as one, with why: directories that vanished while
    walked, and symbolic links (cgroupfs holds none: one in a tree, where a child cgroup would be, is named
    and never followed, nor its target looked at; one named like a file of ``files`` is the leaf's to report).

    A leaf is a cgroup with no child cgroup, or one at ``max_depth`` (the root
    is depth 0). ``exclude`` globs (matched against relative paths such as
    ``/system.slice/foo.service`` by :func:`path_matches`: with or without the leading ``/``; ``*`` also
    matches ``/``) prune a directory
    and everything below it; ``include`` globs, when given, select leaves.
    Walking stops after ``limit`` leaves. A missing root is a :class:`ProbeError`.
    """
    try:
        st = os.stat(root)
    except OSError as exc:
        raise ProbeError(f"cgroup root {root}: {exc.strerror or exc}") from None
    leaves: list[CgroupDir] = []
    vanished: list[tuple[str, str]] = []
    stack = [CgroupDir("/", root.rstrip("/") or "/", st.st_ino, 0)]
    while stack:
        cg = stack.pop()
        children: list[CgroupDir] = []
        if max_depth is None or cg.depth < max_depth:
            try:
                with os.scandir(cg.dir) as it:
                    for entry in it:
                        link = entry.is_symlink() and entry.name not in files
                        if not link and not entry.is_dir(follow_symlinks=False):
                            continue
                        rel = f"{cg.path.rstrip('/')}/{entry.name}"
                        if exclude and path_matches(rel, exclude):
                            continue
                        if link:
                            if not include or path_matches(rel, include):
                                vanished.append((rel, f"{entry.path}: a symbolic link, not followed"))
                            continue
                        children.append(CgroupDir(rel, entry.path, entry.inode(), cg.depth + 1))
            except FileNotFoundError:
                if not include or path_matches(cg.path, include):
                    vanished.append((cg.path, "cgroup vanished during scan"))
                continue
            except OSError as exc:
                vanished.append((cg.path, f"cannot list {cg.dir}: {exc.strerror or exc}"))
                continue
        if children:
            children.sort(key=lambda c: c.path, reverse=True)
            stack.extend(children)
        elif not include or path_matches(cg.path, include):
            leaves.append(cg)
            if limit is not None and len(leaves) >= limit:
                break
    return leaves, vanished


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def read_leaf(cg: CgroupDir, names: Sequence[str] = LEAF_FILES) -> dict[str, str]:
    """The text of each of ``names`` present in ``cg``.

    A file that is absent (controller not enabled) is left out. If the
    directory itself is gone, or a read fails otherwise, :class:`ProbeError`.
    """
    out: dict[str, str] = {}
    base = cg.dir
    try:
        dfd = os.open(base, _DIR_FLAGS)
    except FileNotFoundError:
        raise ProbeError("cgroup vanished during scan") from None
    except OSError as exc:
        raise ProbeError(f"{base}: {exc.strerror or exc}") from None
    missing = False
    try:
        for name in names:
            try:
                out[name] = read_small(name, dir_fd=dfd, one_read=True, nofollow=True).decode("utf-8", "replace")
            except FileNotFoundError:
                missing = True
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise ProbeError("cgroup vanished during scan") from None
                if exc.errno == errno.ELOOP:  # cgroupfs holds no links: one leads out of the tree, never read
                    raise ProbeError(f"{base}/{name}: a symbolic link, not followed") from None
                raise ProbeError(f"{base}/{name}: {exc.strerror or exc}") from None
    finally:
        os.close(dfd)
    # absent files are normal (controller not enabled), unless the directory went away meanwhile
    if missing and not os.path.isdir(base):
        raise ProbeError("cgroup vanished during scan")
    return out


def scan_cgroups(root: str, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 max_depth: int | None = None, limit: int | None = None,
                 names: Sequence[str] = LEAF_FILES) -> list[LeafScan]:
    """Walk ``root``, read and parse every leaf; one :class:`LeafScan` per leaf, sorted by path."""
    leaves, vanished = walk_cgroups(root, include=include, exclude=exclude, max_depth=max_depth, limit=limit,
                                    files=names)
    out = [LeafScan(path, 0, (), None, reason) for path, reason in vanished]
    for cg in leaves:
        files: dict[str, str] = {}
        try:
            files = read_leaf(cg, names)
            inputs = tuple(f"{cg.dir}/{n}" for n in files)
            out.append(LeafScan(cg.path, cg.inode, inputs, parse_cgroup_leaf(files, cg.dir)))
        except ProbeError as exc:
            # what it read (a file that did not parse), or else what it tried to read: an error names its inputs
            tried = tuple(f"{cg.dir}/{n}" for n in (files or names))
            out.append(LeafScan(cg.path, cg.inode, tried, None, str(exc)))
    out.sort(key=lambda s: s.path)
    return out
