"""Burst coalescing: at most one firing per key per interval, with the count of what it stands for.

:class:`Throttle` is a pure, clock-free state machine (the caller passes
``now``). The first notification of a quiet key fires at once, so a lone
change is reported without delay; notifications arriving within ``interval``
of the last firing are counted and folded into one firing at the end of that
interval. A key notified N times in T seconds therefore fires at most
``T / interval + 1`` times, and the counts of its firings add up to N.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["Throttle"]


@dataclass(slots=True)
class _Slot:
    pending: int = 0
    next_at: float = float("-inf")
    armed: bool = False


class Throttle:
    """Per-key leading-edge throttle."""

    __slots__ = ("_slots", "interval")

    def __init__(self, interval: float) -> None:
        if interval < 0:
            raise ValueError("interval must be 0 or more")
        self.interval = interval
        self._slots: dict[Hashable, _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def hit(self, key: Hashable, now: float) -> float | None:
        """Count one notification of ``key``.

        Returns when :meth:`due` should be called (``now`` or later), or
        ``None`` when a firing of ``key`` is already scheduled and this
        notification will be folded into it.
        """
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        slot.pending += 1
        if slot.armed:
            return None
        slot.armed = True
        return max(now, slot.next_at)

    def due(self, key: Hashable, now: float) -> int:
        """Fire ``key``: the number of notifications this firing stands for (0 if forgotten meanwhile)."""
        slot = self._slots.get(key)
        if slot is None or not slot.armed:
            return 0
        count = slot.pending
        slot.pending = 0
        slot.armed = False
        slot.next_at = now + self.interval
        return count

    def forget(self, key: Hashable) -> None:
        self._slots.pop(key, None)
