"""The collector settings the agent runs with."""

from __future__ import annotations

import gc

from agent import gctune


def test_tune_freezes_what_exists_and_collects_the_young_less_often() -> None:
    before = gc.get_threshold()
    try:
        garbage: list[object] = []
        garbage.append(garbage)  # a cycle, unreachable once the name goes
        del garbage
        gctune.tune()
        assert gc.get_threshold() == (gctune.YOUNG, before[1], before[2])
        assert gc.get_freeze_count() > 1000  # the modules, classes and functions loaded so far
        assert gc.garbage == []
        # a cycle made afterwards is still collected
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
