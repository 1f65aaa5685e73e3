"""The cyclic garbage collector's settings for a long-running agent.

Reference counting frees nearly everything the hot path makes (a guest
event's dict dies once its JSON is written); the cyclic collector is for the
rest. With CPython's default thresholds (700, 10, 10) a young collection runs
every couple of hundred events and walks every event still in flight, and each
full collection walks every object made at start (modules, classes,
configuration). Measured in ``benchmarks/bench_receiver.py``: 2 to 3 µs per
guest event, against 0.7 µs after :func:`tune`, which

- freezes what exists once the agent is set up (:func:`gc.freeze`: a
  permanent generation the collector no longer walks), after one collection
  so that no garbage is kept for good;
- raises the young threshold to ``young`` allocations: cyclic garbage waits
  for at most that many new container objects (a few megabytes at most).
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG", "tune"]

#: container allocations between young collections (CPython's default is 700)
YOUNG = 10_000


def tune(young: int = YOUNG) -> None:
    """Freeze what exists now and collect the young generation less often (see the module text)."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
