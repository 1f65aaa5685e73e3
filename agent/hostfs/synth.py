"""A synthetic cgroup v2 tree of real files, for tests and benchmarks.

:func:`write_cgroup_tree` lays out ``leaves`` leaf cgroups under ``root`` the
way systemd does (slices holding services and scopes), each with the files a
poll reads, filled with plausible values. It is a fake host shipped next to
the code that reads real hosts, like the memory sink next to the real ones.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_cgroup_tree", "write_leaf"]


def _psi(seed: int, full: bool = True) -> str:
    some = f"some avg10={seed % 7}.{seed % 100:02d} avg60=0.{seed % 10}0 avg300=0.05 total={seed * 1013}\n"
    return some + (f"full avg10=0.00 avg60=0.00 avg300=0.00 total={seed * 97}\n" if full else "")


def write_leaf(path: str | os.PathLike[str], seed: int = 1, *, oom_kills: int = 0, limit: int | None = None) -> None:
    """Write one cgroup's polled files into directory ``path`` (created if needed)."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "memory.events": f"low 0\nhigh 0\nmax {oom_kills * 3}\noom {oom_kills}\noom_kill {oom_kills}\n"
                         "oom_group_kill 0\n",
        "cpu.stat": (f"usage_usec {seed * 1511}\nuser_usec {seed * 1000}\nsystem_usec {seed * 511}\n"
                     f"nice_usec 0\nnr_periods {seed}\nnr_throttled {seed // 10}\nthrottled_usec {seed * 3}\n"
                     "nr_bursts 0\nburst_usec 0\n"),
        "pids.events": f"max {seed % 3}\n",
        "memory.current": f"{seed * 4096 + 1_048_576}\n",
        "memory.max": "max\n" if limit is None else f"{limit}\n",
        "cpu.pressure": _psi(seed),
        "memory.pressure": _psi(seed + 1),
        "io.pressure": _psi(seed + 2),
    }
    for name, text in files.items():
        (d / name).write_text(text)


def write_cgroup_tree(root: str | os.PathLike[str], leaves: int = 1000) -> list[str]:
    """Create ``leaves`` leaf cgroups under ``root``; return their relative paths.

    Layout: ``/system.slice/svc-N.service`` for half of them, the rest as
    ``/user.slice/user-U.slice/session-N.scope`` (ten users) and
    ``/machine.slice/vm-N.scope``; every fiftieth leaf has a memory limit and
    one OOM kill.
    """
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    for n in range(leaves):
        if n % 2 == 0:
            rel = f"/system.slice/svc-{n:05d}.service"
        elif n % 4 == 1:
            rel = f"/user.slice/user-{1000 + n % 10}.slice/session-{n}.scope"
        else:
            rel = f"/machine.slice/vm-{n:05d}.scope"
        special = n % 50 == 0
        write_leaf(base / rel.lstrip("/"), seed=n + 1, oom_kills=1 if special else 0,
                   limit=(512 << 20) if special else None)
        paths.append(rel)
    return sorted(paths)
