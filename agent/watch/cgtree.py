"""The cgroup tree as the watcher sees it: every directory with its notification files, and signed changes.

:func:`walk_dirs` lists every cgroup directory (not only leaves, unlike the
poller's walk) with the files matching the watched globs; :func:`changed` is
the pure difference the change readings carry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ProbeError
from ..hostfs.cgroupfs import path_matches

__all__ = ["CgroupDirInfo", "changed", "child_path", "matches", "walk_dirs"]


@dataclass(frozen=True, slots=True)
class CgroupDirInfo:
    """One cgroup directory found by :func:`walk_dirs`."""

    path: str
    dir: str
    inode: int
    depth: int
    files: tuple[str, ...]


#: include/exclude globs on cgroup paths, as the poller matches them
matches = path_matches


def child_path(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


def walk_dirs(root: str, *, exclude: Sequence[str] = (), max_depth: int | None = None,
              files: Sequence[str] = ("*.events",), start: str = "/") -> list[CgroupDirInfo]:
    """Every cgroup directory under ``root`` (from ``start``, relative), with its files matching ``files``.

    ``exclude`` prunes a directory and what is below it; directories deeper
    than ``max_depth`` are left out. A missing ``root`` is a :class:`ProbeError`;
    a directory that vanishes meanwhile is skipped.
    """
    base = root.rstrip("/") or "/"
    top = base if start == "/" else base + start
    try:
        os.stat(top)
    except OSError as exc:
        raise ProbeError(f"cgroup root {top}: {exc.strerror or exc}") from None
    out: list[CgroupDirInfo] = []
    stack = [(start, top, start.count("/") if start != "/" else 0)]
    while stack:
        rel, path, depth = stack.pop()
        names: list[str] = []
        subdirs: list[tuple[str, str]] = []
        try:
            with os.scandir(path) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        subdirs.append((e.name, e.path))
                    elif matches(e.name, files):
                        names.append(e.name)
            ino = os.stat(path).st_ino
        except OSError:
            continue
        out.append(CgroupDirInfo(rel, path, ino, depth, tuple(sorted(names))))
        if max_depth is not None and depth >= max_depth:
            continue
        for name, sub in subdirs:
            crel = child_path(rel, name)
            if not (exclude and matches(crel, exclude)):
                stack.append((crel, sub, depth + 1))
    out.sort(key=lambda d: d.path)
    return out


def changed(prev: dict[str, Any] | None, cur: dict[str, Any]) -> dict[str, int]:
    """``cur - prev`` for every integer key whose value changed (signed: states in ``cgroup.events`` go down too)."""
    if prev is None:
        return {}
    out: dict[str, int] = {}
    for k, v in cur.items():
        before = prev.get(k)
        if type(v) is int and type(before) is int and v != before:
            out[k] = v - before
    return out
