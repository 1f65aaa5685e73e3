"""Children forked from the agent handle their own signals.

The event loop learns of a signal through a wakeup fd that a forked child
inherits. pyroute2 forks a child to open a socket in a network namespace and
ends it with SIGTERM: without this, the child's handler would write that
SIGTERM into the shared wakeup fd, and the agent would stop as if it had been
sent the signal itself.
"""

from __future__ import annotations

import os
import signal

__all__ = ["children_keep_their_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_registered = False


def _reset_in_child() -> None:
    signal.set_wakeup_fd(-1)
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def children_keep_their_signals() -> None:
    """From now on, a child forked from this process starts with the default handling of the agent's signals
    and no wakeup fd (once per process; later calls do nothing)."""
    global _registered
    if not _registered:
        os.register_at_fork(after_in_child=_reset_in_child)
        _registered = True
