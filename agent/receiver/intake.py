"""What the frames of one read are: refused, copies of events seen before, or new events to hand on.

:func:`sort_frames` checks each frame (:func:`~.validate.parse_event`, the guest-signature policy), looks its
``(channel, source, id)`` up in the listener's duplicate window and among the frames before it in the same
read, and says per frame, in order, what became of it. Only a single-event ``deliver`` is called here (one
call per new event); a batch ``deliver`` is called by the connection with the new events of the whole read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .answers import call
from .dedupe import MAX_KEPT, Key, key_of
from .validate import Rejected, parse_event

if TYPE_CHECKING:
    from .server import Receiver

__all__ = ["sort_frames"]

_NEW: Any = object()


def sort_frames(rx: Receiver, channel: str, peer: str, frames: list[bytes], *, batch: bool,
                taken: Callable[[int, asyncio.Future[Any]], None],
                ) -> tuple[list[Any], list[dict[str, Any]], list[bytes], list[Key]]:
    """Per frame, in order, its fate: a refusal ``(reason, detail)``; the entry of an earlier copy that decides
    it ``(future or None when settled, position, 1)``; a new event handed to a single-event ``deliver``
    ``(future, -1, 1)`` (``taken`` is told when it answers); or, with ``batch``, the new event's position among
    the new events of this read. Also those events, their frames and their duplicate-window keys."""
    depth, most = rx.options.max_depth, rx.options.max_attributes
    dedupe = rx.dedupe
    seen = dedupe.entries
    check = rx.policy.check if rx.policy.mode != "off" else None
    fates: list[Any] = []
    events: list[dict[str, Any]] = []
    raw: list[bytes] = []
    keys: list[Key] = []
    here: dict[Key, int] = {}
    for frame in frames:
        try:
            event = parse_event(frame, max_depth=depth, max_attributes=most)
            if check is not None:
                check(event)
        except Rejected as r:
            fates.append((r.reason, r.detail))
            continue
        source, ident = event["source"], event["id"]
        key = (channel, source, ident) if len(source) + len(ident) <= MAX_KEPT else key_of(channel, source, ident)
        first = seen.get(key, _NEW)
        if first is not _NEW:
            try:
                first = dedupe.resolve(key, first)  # the first copy: settled (None) or pending
            except KeyError:  # the first copy was refused, dropped or failed: this one is new
                first = _NEW
        if first is not _NEW:
            rx.stats.duplicates += 1
            fates.append((None, 0, 1) if first is None else (first[0], first[1], 1))
        elif key in here:  # a copy of an event earlier in this very read
            rx.stats.duplicates += 1
            fates.append(here[key])
        elif not batch:
            fut = call(rx.deliver, event, peer)
            rx.hold(fut, 1, len(frame))
            dedupe.add(key, fut)
            fut.add_done_callback(functools.partial(taken, 1))
            fates.append((fut, -1, 1))
        else:
            here[key] = len(events)
            fates.append(len(events))
            events.append(event)
            raw.append(frame)
            keys.append(key)
    return fates, events, raw, keys
