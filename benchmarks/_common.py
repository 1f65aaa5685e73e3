"""What the benchmarks share: running on one core, and the Ed25519 signing floor."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from agent.signing.keys import SigningKey

__all__ = ["one_core", "sign_floor"]


@contextmanager
def one_core() -> Iterator[bool]:
    """Pin this process (and threads it starts) to one CPU; yields whether that worked; restores after."""
    try:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(before)})
    except (AttributeError, OSError):
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setaffinity(0, before)


def sign_floor(key: SigningKey, n: int, size: int = 110) -> float:
    """Raw Ed25519 signatures per second of a ``size``-byte message (a DSSE PAE is about 110 bytes)."""
    msg = os.urandom(size)
    sign = key.sign
    t0 = time.perf_counter()
    for _ in range(n):
        sign(msg)
    return n / (time.perf_counter() - t0)
