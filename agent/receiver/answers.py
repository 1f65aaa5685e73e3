"""What a delivery answered for the frames it decided: taken, refused (and why), or dropped.

A delivery's future completes with None or True (every frame taken), False (dropped by a queue's overflow
policy), or a list with each event's own answer: True, False, a :class:`~.validate.Rejected`, an
:class:`~agent.errors.Undeliverable` (no sink can ever take it) or the exception that kept the host from stamping
it. An exception of the future itself is a refusal when it is a :class:`~.validate.Rejected`, else a delivery
failure.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import Undeliverable
from .validate import Rejected

if TYPE_CHECKING:
    from .server import Deliver

__all__ = ["all_taken", "call", "refusal", "why"]


def call(deliver: Deliver, event: dict[str, Any], peer: str) -> asyncio.Future[Any]:
    try:
        return asyncio.ensure_future(deliver(event, peer))
    except Exception as exc:
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(exc)
        return fut


def all_taken(fut: asyncio.Future[Any]) -> bool:
    """A settled future whose answer takes every frame it decides (the common case, checked first)."""
    if fut.cancelled() or fut.exception() is not None:
        return False
    res = fut.result()
    return res is None or res is True


def refusal(fut: asyncio.Future[Any], pos: int = -1) -> tuple[str, str] | None:
    """``(reason, detail)`` when a settled delivery refused or dropped the frame; None when taken or failed.

    ``pos`` is the frame's place in a batch's answer (a list), -1 when the answer is the frame's alone.
    """
    if fut.cancelled():
        return None
    exc = fut.exception()
    if isinstance(exc, Rejected):
        return exc.reason, exc.detail
    if exc is not None:
        return None
    res = fut.result()
    if pos >= 0 and type(res) is list:
        res = res[pos]
    return why(res)


def why(res: Any) -> tuple[str, str] | None:
    """``(reason, detail)`` of one event's answer when it was not taken (refused or dropped), else None."""
    if isinstance(res, Rejected):
        return res.reason, res.detail
    if isinstance(res, Undeliverable):
        return "dropped", str(res)
    if isinstance(res, Exception):
        return "attributes", str(res)
    if res is False:
        return "dropped", "the host's queue overflow policy dropped it"
    return None
