"""The receiver wired to the pipeline: :func:`serve_listener` for the composition root.

:class:`PipelineDeliver` is the ``deliver`` a :class:`Receiver` needs, built
on ``pipeline.submit_guests(events, hostpeer, frames) -> GuestBatch``. One
task submits batches strictly in the order they were handed over (so the
pipeline sees each connection's frames in order even while a ``block`` queue
makes it wait); each batch's future completes when its ``GuestBatch`` does.
Calling it with one event (the NATS listener does) is a batch of one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..config import ListenerOptions
from ..errors import SinkError, Undeliverable
from ..futures import forward
from .server import Receiver
from .validate import Rejected

__all__ = ["GuestPipeline", "PipelineDeliver", "serve_listener"]

log = logging.getLogger("agent.receiver")


#: told of a batch's event ``i`` that is not taken, and why: False (a queue dropped it) or the refusing exception
Refused = Callable[[int, Any], None]
#: told that the first ``n`` events of a batch are settled (taken for good, or refused and told so)
Progressed = Callable[[int], None]


class GuestPipeline(Protocol):
    async def submit_guests(self, events: Sequence[Mapping[str, Any]], hostpeer: str,
                            frames: Sequence[bytes] | None = None,
                            on_answer: Callable[[Any], None] | None = None) -> Any: ...


class PipelineDeliver:
    """A receiver's ``deliver`` on a pipeline: batches (``many``) or single events (calling it)."""

    #: ``many`` takes ``on_refusal`` and tells of events not taken before their batch completes
    tells_refusals = True
    #: ``many`` takes ``on_progress`` and tells how many of a batch's first events are settled, as that grows
    tells_progress = True

    def __init__(self, pipeline: GuestPipeline) -> None:
        self.pipeline = pipeline
        self._pending: deque[tuple[list[dict[str, Any]], str, list[bytes] | None, asyncio.Future[Any],
                                   Refused | None, Progressed | None]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def many(self, events: list[dict[str, Any]], hostpeer: str, frames: list[bytes] | None = None,
             on_refusal: Refused | None = None, on_progress: Progressed | None = None) -> asyncio.Future[Any]:
        """Submit a batch; the future's result is None (all taken) or each event's answer in order.
        ``on_refusal(i, why)`` is told of each event not taken as soon as that is known (see
        :meth:`agent.pipeline.router.GuestBatch.watch`), and ``on_progress(n)`` that the first ``n`` are
        settled (:meth:`~agent.pipeline.router.GuestBatch.progress`), when the pipeline's batches can tell."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((events, hostpeer, frames, fut, on_refusal, on_progress))
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="guest submit")
        return fut

    def __call__(self, event: dict[str, Any], hostpeer: str) -> asyncio.Future[bool]:
        """One event: True when taken, False when dropped (for now); raises Rejected when refused, or dropped for
        good (reason ``dropped``: no sink can ever take it)."""
        one: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.many([event], hostpeer).add_done_callback(functools.partial(forward, dst=one, convert=_single))
        return one

    async def aclose(self) -> None:
        # first, before anything that waits (the cancellation closing the listener may cut any await short):
        # what was handed on and not submitted fails, so its guests, and copies waiting on it, send it again
        while self._pending:
            _fail(self._pending.popleft()[3])
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            events, hostpeer, frames, fut, on_refusal, on_progress = pending.popleft()
            if fut.done():
                continue
            try:
                batch = await self.pipeline.submit_guests(
                    events, hostpeer, frames, on_answer=functools.partial(_follow, on_refusal, on_progress))
            except asyncio.CancelledError:  # closed while a full queue held the batch back
                _fail(fut)
                raise
            except Exception as exc:
                # events the host cannot stamp are refused one by one in the answer; what fails a whole batch is
                # transient (no signing worker, a sink queue) or a bug: its connection closes unacknowledged,
                # the sender sends it again, and the other batches go on
                if not isinstance(exc, SinkError):
                    log.exception("submitting guest events failed")
                fut.set_exception(exc)
                continue
            batch.future.add_done_callback(functools.partial(forward, dst=fut))


def _follow(on_refusal: Refused | None, on_progress: Progressed | None, answer: Any) -> None:
    """Watch a batch's answer from before its events go into the queues (a full queue may hold them back)."""
    if on_refusal is not None and (watch := getattr(answer, "watch", None)) is not None:
        watch(on_refusal)
        if on_progress is not None and (progress := getattr(answer, "progress", None)) is not None:
            progress(on_progress)  # after watch: what is refused is told before it counts as settled


def _fail(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(SinkError("the listener closed before the pipeline took the batch"))


def _single(res: list[Any] | None) -> bool:
    """A one-event batch's answer as a single event's: True, False (dropped), or raises why it was refused."""
    one = True if res is None else res[0]
    if isinstance(one, Rejected):
        raise one
    if isinstance(one, Undeliverable):
        raise Rejected("dropped", str(one))
    if isinstance(one, Exception):
        raise Rejected("attributes", str(one))
    return bool(one)


async def serve_listener(options: ListenerOptions, pipeline: GuestPipeline, **kw: Any) -> None:
    """Run one ``[[listeners]]`` entry until cancelled."""
    deliver = PipelineDeliver(pipeline)
    rx = Receiver.build(options, deliver, **kw)
    try:
        await rx.serve()
    finally:
        await deliver.aclose()
