"""Fixtures of the watch tests: a scratch cgroup2 subtree, and a collector of emitted readings."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from agent.model import Reading

UNIFIED = Path("/sys/fs/cgroup/unified")


class Collector:
    """An ``emit`` that keeps every reading, and a bounded wait for one that matches."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self._changed = anyio.Event()

    async def __call__(self, reading: Reading) -> None:
        self.readings.append(reading)
        self._changed.set()

    async def wait_for(self, pred: Callable[[Reading], bool], timeout: float = 5.0) -> Reading:
        """The first reading (old or new) matching ``pred``; fails the test after ``timeout`` seconds."""
        seen = 0
        with anyio.move_on_after(timeout):
            while True:
                for r in self.readings[seen:]:
                    if pred(r):
                        return r
                seen = len(self.readings)
                self._changed = anyio.Event()
                await self._changed.wait()
        raise AssertionError(f"no matching reading within {timeout} s; got {[dict(r.output) for r in self.readings]}")

    def changes(self, subject: str) -> list[Reading]:
        return [r for r in self.readings if r.subject == subject and r.error is None]


def _rmtree(path: Path) -> None:
    """Remove a cgroup subtree, deepest first, after killing what runs in it."""
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        _kill(sub)
        sub.rmdir()
    _kill(path)
    path.rmdir()


def _kill(path: Path) -> None:
    kill = path / "cgroup.kill"
    if kill.exists() and (path / "cgroup.procs").read_text().strip():
        kill.write_text("1")
        for _ in range(200):
            if not (path / "cgroup.procs").read_text().strip():
                break
            import time

            time.sleep(0.01)


@pytest.fixture
def cg_root() -> Iterator[Path]:
    """A fresh directory under the cgroup2 mount, removed with everything in it afterwards."""
    if os.geteuid() != 0 or not (UNIFIED / "cgroup.controllers").exists():
        pytest.skip("needs root and a cgroup2 hierarchy at /sys/fs/cgroup/unified")
    root = UNIFIED / f"hs-watch-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    try:
        yield root
    finally:
        _rmtree(root)


@pytest.fixture
def collector() -> Collector:
    return Collector()
