"""What the agent's signals mean: SIGHUP reloads; SIGINT or SIGTERM stops (drains); a second one while
stopping exits at once. SIGUSR1 and SIGUSR2 mean nothing here and are logged, not left to their default
(which ends the process without draining: a log rotation tool sending one would cost what is queued).

A signal sent twice at the same moment is one request: GNU ``timeout`` signals
the agent and its process group, and a terminal's Ctrl-C reaches every process
of the group, so the agent can see the same SIGTERM or SIGINT twice within a
few milliseconds. Only one that comes :data:`SAME_SIGNAL` seconds or more
after the first is an operator asking again.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from .childsignals import children_keep_their_signals

__all__ = ["SAME_SIGNAL", "handle_signals", "ignore_until_handled"]

log = logging.getLogger("hoststamp")

#: seconds within which a second SIGINT/SIGTERM is the same request sent twice, not a request to exit at once
SAME_SIGNAL = 0.25


#: (signal, when) of the first SIGINT or SIGTERM that came while the agent was starting
_early: list[tuple[int, float]] = []


def ignore_until_handled(*, note_stops: bool = False) -> None:
    """While the agent starts, before :func:`handle_signals` takes them: SIGHUP (nothing to reload yet),
    SIGUSR1 and SIGUSR2 are ignored rather than ending the process. With ``note_stops``, a SIGINT or SIGTERM
    is noted rather than ending the process at once: the agent stops as soon as it handles its signals, the
    usual way (a log line, a drain, exit 0); another one a moment later exits at once. Children forked
    meanwhile start with the defaults."""
    children_keep_their_signals()
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    if note_stops:
        _early.clear()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _note_stop)


def _note_stop(signum: int, _frame: object) -> None:
    now = time.monotonic()
    if _early and now - _early[0][1] >= SAME_SIGNAL:  # asked again while still starting: out now
        # in the log's own format once it is set up (before, Python writes the bare message to stderr)
        log.error("received %s again while starting: exiting now", signal.Signals(signum).name)
        logging.shutdown()
        os._exit(1)
    if not _early:
        _early.append((signum, now))


async def handle_signals(stop: anyio.Event, reload: Callable[[], None], *,
                         task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Until cancelled: ``reload()`` on SIGHUP, ``stop`` set on the first SIGINT/SIGTERM, exit 1 on another."""
    children_keep_their_signals()
    # kept open until the end, so a late SIGHUP never falls back to its default (terminate)
    stopping_since = 0.0
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1,
                                    signal.SIGUSR2) as signals:
        task_status.started()
        if _early:  # a stop asked for while the agent was starting
            signum, stopping_since = _early.pop()
            log.info("received %s while starting, stopping (again to exit at once)", signal.Signals(signum).name)
            stop.set()
        async for signum in signals:
            if signum in (signal.SIGUSR1, signal.SIGUSR2):
                log.warning("received %s, which means nothing to hoststamp: ignored (SIGHUP reloads, SIGTERM "
                            "stops)", signal.Signals(signum).name)
                continue
            if signum == signal.SIGHUP:
                if stop.is_set():
                    log.info("received SIGHUP while stopping: nothing is reloaded")
                    continue
                log.info("received SIGHUP, reloading")
                reload()
                continue
            name = signal.Signals(signum).name
            if stop.is_set() and time.monotonic() - stopping_since < SAME_SIGNAL:
                log.debug("received %s again at once: taken as the same request", name)
                continue
            if stop.is_set():
                # a second SIGINT/SIGTERM while draining: the operator wants out now. A spool keeps what it holds
                # (it is crash-safe); without one, what was not delivered is lost, as the log says
                log.error("received %s again while stopping: exiting now, without draining (undelivered events "
                          "stay in spools, or are lost without one)", name)
                logging.shutdown()
                os._exit(1)
            log.info("received %s, stopping (again to exit at once)", name)
            stopping_since = time.monotonic()
            stop.set()
