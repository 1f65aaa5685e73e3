"""One future settled from another: the hand-over every layer of the guest path needs.

A receiver's frames wait on a pipeline's answer, which waits on the sinks'
receipts; each hop is :func:`forward`, which passes cancellation and failure
through unchanged and lets the hop reshape a result (or turn it into a
failure by raising).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["forward"]


def forward(src: asyncio.Future[Any], dst: asyncio.Future[Any],
            convert: Callable[[Any], Any] | None = None) -> None:
    """Settle ``dst`` as ``src`` settled (a done-callback): cancelled, failed, or with ``convert(result)``.

    An exception ``convert`` raises becomes ``dst``'s. A ``dst`` already settled is left alone.
    """
    if dst.done():
        return
    if src.cancelled():
        dst.cancel()
        return
    if (exc := src.exception()) is not None:
        dst.set_exception(exc)
        return
    try:
        value = src.result() if convert is None else convert(src.result())
    except Exception as err:
        dst.set_exception(err)
        return
    dst.set_result(value)
