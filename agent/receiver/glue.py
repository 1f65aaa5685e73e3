"""The receiver wired to the pipeline: :func:`serve_listener` for the composition root.

:class:`PipelineDeliver` is the ``deliver`` callable a :class:`Receiver`
needs, built on ``pipeline.submit_guest(event, hostpeer) -> Receipt``. One
task submits events strictly in the order they were handed over (so the
pipeline sees each connection's frames in order even while a ``block`` queue
makes it wait); each returned future completes when the receipt does. A
receipt with a ``future`` attribute (an ``asyncio.Future[bool]``) is chained
directly; otherwise its ``wait()`` is awaited in a task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from ..config import ListenerOptions
from ..errors import AgentError, SinkError
from .server import Receiver
from .validate import Rejected

__all__ = ["GuestPipeline", "PipelineDeliver", "serve_listener"]

log = logging.getLogger("agent.receiver")


class GuestPipeline(Protocol):
    async def submit_guest(self, event: Mapping[str, Any], hostpeer: str) -> Any: ...


class PipelineDeliver:
    def __init__(self, pipeline: GuestPipeline) -> None:
        self.pipeline = pipeline
        self._pending: deque[tuple[dict[str, Any], str, asyncio.Future[bool]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, event: dict[str, Any], hostpeer: str) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((event, hostpeer, fut))
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="guest submit")
        return fut

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._pending:
            _e, _p, fut = self._pending.popleft()
            fut.cancel()

    async def _run(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            event, hostpeer, fut = pending.popleft()
            if fut.done():
                continue
            try:
                receipt = await self.pipeline.submit_guest(event, hostpeer)
            except (ValueError, TypeError, AgentError) as exc:
                # an event the host cannot stamp is refused for good; a sink failure is transient
                fut.set_exception(exc if isinstance(exc, SinkError) else Rejected("attributes", str(exc)))
                continue
            except Exception as exc:  # a bug: fail this frame (its connection closes), keep serving the others
                log.exception("submitting a guest event failed")
                fut.set_exception(exc)
                continue
            done: asyncio.Future[bool] | None = getattr(receipt, "future", None)
            if not isinstance(done, asyncio.Future):
                # no public future on the receipt: wait for it in a task (a few microseconds more per event)
                done = asyncio.ensure_future(receipt.wait())
            done.add_done_callback(functools.partial(_chain, dst=fut))


def _chain(src: asyncio.Future[bool], *, dst: asyncio.Future[bool]) -> None:
    if dst.done():
        return
    if src.cancelled():
        dst.cancel()
    elif (exc := src.exception()) is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


async def serve_listener(options: ListenerOptions, pipeline: GuestPipeline, **kw: Any) -> None:
    """Run one ``[[listeners]]`` entry until cancelled."""
    deliver = PipelineDeliver(pipeline)
    rx = Receiver.build(options, deliver, **kw)
    try:
        await rx.serve()
    finally:
        await deliver.aclose()
