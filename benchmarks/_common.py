"""What the benchmarks share: running on one core, and the Ed25519 signing floor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from agent import _native
from agent.signing.keys import SigningKey

__all__ = ["SIGNER", "one_core", "sign_floor", "sign_floor_processes"]

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


#: one signing process of :func:`sign_floor_processes`: say it is ready, wait for a line on stdin, sign N
#: messages of SIZE bytes with the agent's signer, print the seconds that took
_SIGNING_PROCESS = r"""
import os, sys, time
from benchmarks._common import SIGNER, _native
from agent.signing.keys import SigningKey
n, size = int(sys.argv[1]), int(sys.argv[2])
key = SigningKey.generate()
sign = key.sign if _native.Signer is None else _native.Signer(key.seed()).sign
msg = os.urandom(size)
sign(msg)
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
for _ in range(n):
    sign(msg)
print(time.perf_counter() - t0, flush=True)
"""


def sign_floor_processes(n: int, size: int = 110, processes: int = 2) -> float:
    """Raw Ed25519 signatures per second of ``processes`` separate interpreters signing ``n`` messages each at
    the same moment (the scheduler places them): the machine's own rate for that many cores at once, so that
    ``sign_floor_processes(n, p=2) / sign_floor_processes(n, p=1)`` is how far raw signing itself scales."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = [subprocess.Popen([sys.executable, "-c", _SIGNING_PROCESS, str(n), str(size)], cwd=root,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(processes)]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline() != b"ready\n":
                raise RuntimeError("a signing process failed to start")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        times = [float(p.communicate()[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError("a signing process failed")
    return processes * n / max(times)
