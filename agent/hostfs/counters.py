"""Counter deltas between two readings of the same thing.

Pure helpers shared by every probe that reports "since the last reading":
:func:`nested_deltas` diffs two nested mappings of counters, and
:class:`DeltaTracker` remembers the last counters per key (cgroup path, link,
LVE) together with an identity (inode, ifindex) so that a thing removed and
created again under the same name starts afresh instead of yielding a
negative delta.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DeltaTracker", "nested_deltas"]


def nested_deltas(prev: Mapping[str, Any], cur: Mapping[str, Any]) -> dict[str, Any]:
    """``cur - prev`` for every integer present in both, recursing into sub-mappings.

    Floats (averages, gauges written as floats), booleans, strings and keys
    missing on either side are left out. A counter that went down was reset
    (or wrapped); its delta is then its current value, the count since the reset.
    """
    out: dict[str, Any] = {}
    for key, now in cur.items():
        before = prev.get(key)
        if before is None:
            continue
        if isinstance(now, Mapping):
            if isinstance(before, Mapping):
                sub = nested_deltas(before, now)
                if sub:
                    out[key] = sub
        elif (type(now) is int) and (type(before) is int):
            out[key] = now - before if now >= before else now
    return out


@dataclass(slots=True)
class _Last:
    identity: object
    time: float
    counters: Mapping[str, Any]


class DeltaTracker:
    """Last counters per key; :meth:`update` returns the deltas since then.

    Memory is bounded by the keys seen in the latest round: call :meth:`retain`
    with the keys of a complete round to forget what disappeared.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, _Last] = {}

    def __len__(self) -> int:
        return len(self._last)

    def update(self, key: str, counters: Mapping[str, Any], now: float,
               identity: object = None) -> dict[str, Any] | None:
        """Remember ``counters`` for ``key``; deltas since the last call, or ``None``.

        ``None`` means there is nothing to compare with: first sight of
        ``key``, or ``identity`` changed (the thing was re-created). Otherwise
        the result holds ``interval_s`` (seconds since that reading) and the
        :func:`nested_deltas` of the counters.
        """
        last = self._last.get(key)
        self._last[key] = _Last(identity, now, counters)
        if last is None or last.identity != identity:
            return None
        out: dict[str, Any] = {"interval_s": round(max(0.0, now - last.time), 6)}
        out.update(nested_deltas(last.counters, counters))
        return out

    def forget(self, key: str) -> None:
        self._last.pop(key, None)

    def retain(self, keys: Iterable[str]) -> None:
        """Forget every key not in ``keys``."""
        keep = set(keys)
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]
