"""What the benchmarks share: running on one core, and the Ed25519 signing floor."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from agent import _native
from agent.signing.keys import SigningKey

__all__ = ["SIGNER", "one_core", "sign_floor"]

#: what the agent signs with here: ``libsodium`` (the native signer, when built) or ``cryptography``
SIGNER = _native.native_signer()


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


def sign_floor(key: SigningKey, n: int, size: int = 110, *, signer: str = SIGNER) -> float:
    """Raw Ed25519 signatures per second of a ``size``-byte message (a DSSE PAE is about 110 bytes), one call
    per signature, with ``signer``: by default what the agent signs with, so a ratio against it is the agent's
    own overhead."""
    msg = os.urandom(size)
    sign = key.sign if signer == "cryptography" or _native.Signer is None else _native.Signer(key.seed()).sign
    t0 = time.perf_counter()
    for _ in range(n):
        sign(msg)
    return n / (time.perf_counter() - t0)
