"""Event-driven readings: kernel notifications (POLLPRI, inotify, netlink) turned into ``change`` readings.

:class:`WatchSource` is the one mechanism; :mod:`.cgroups` (with :mod:`.cgtree` and :mod:`.psi`), :mod:`.mounts` and
:mod:`.links` are its users, called from the probes' ``watch()``.
"""

from .coalesce import Throttle
from .source import CHANGE, WatchOptions, WatchSource, WatchStats, live_stats

__all__ = ["CHANGE", "Throttle", "WatchOptions", "WatchSource", "WatchStats", "live_stats"]
