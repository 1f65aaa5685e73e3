"""Logging set-up: human lines by default, one JSON object per line with ``json``."""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

import orjson

from .transport.uri import redact

__all__ = ["LOG_BURST", "LOG_EVERY", "JsonFormatter", "OncePerKey", "configure"]


#: first-time lines of one :class:`OncePerKey` at most: this many at once, then one each LOG_EVERY seconds
LOG_BURST = 100
LOG_EVERY = 1.0


class OncePerKey:
    """Log a peer-caused problem the first time a key (peer, reason ...) is seen; count the rest.

    Memory is bounded: past ``max_keys`` the least recently seen key is
    forgotten (and would be logged again), so a stream of new peers cannot grow it. So is the log: at most
    ``burst`` first-time lines at once, then one every ``every`` seconds; a peer that cycles through more keys
    than are remembered (thousands of uids, of source addresses) is counted beyond that, and the next line
    says how many went unlogged (or :meth:`flush` does, when no line comes). A key whose first line the rate
    held back is not remembered as logged: its next occurrence is logged when the rate allows.
    """

    def __init__(self, logger: logging.Logger, *, max_keys: int = 1024, level: int = logging.WARNING,
                 suffix: str = " (repeats from this peer are counted, not logged)", burst: int = LOG_BURST,
                 every: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.logger = logger
        self.max_keys = max_keys
        self.level = level
        self.suffix = suffix
        self._seen: OrderedDict[Hashable, int] = OrderedDict()
        self._burst, self._every, self._clock = burst, every, clock
        self._tokens = float(burst)
        self._filled_at = clock()
        #: first-time problems not logged (the rate was spent) since the last line
        self.unlogged = 0

    def __len__(self) -> int:
        return len(self._seen)

    def count(self, key: Hashable) -> int:
        """How often ``key`` occurred since it was (last) remembered."""
        return self._seen.get(key, 0)

    def first(self, key: Hashable) -> bool:
        """Record one occurrence; True if this is the first one remembered."""
        n = self._seen.get(key)
        if n is not None:
            self._seen[key] = n + 1
            self._seen.move_to_end(key)
            return False
        self._seen[key] = 1
        if len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return True

    def __call__(self, key: Hashable, msg: str, *args: object) -> bool:
        """Log ``msg % args`` if ``key`` is new and the rate allows; True when a line was written."""
        if key in self._seen:
            self.first(key)  # counted
            return False
        now = self._clock()
        self._tokens = min(float(self._burst), self._tokens + (now - self._filled_at) / self._every)
        self._filled_at = now
        if self._tokens < 1:
            self.unlogged += 1  # not remembered: named when it occurs again and the rate allows
            return False
        self._tokens -= 1
        self.first(key)
        self.flush(" like the next")
        self.logger.log(self.level, msg + self.suffix, *args)
        return True

    def flush(self, like: str = "") -> None:
        """Say how many problems the rate held back since the last line, if any: before the next line (``like``
        it), or when no further line may come (after a while, and at the end)."""
        if self.unlogged:
            self.logger.log(self.level, "%d more%s, from peers not logged before, were only counted (at most %d such "
                            "lines at once, then one every %gs)", self.unlogged, like, self._burst, self._every)
            self.unlogged = 0


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class _Redact(logging.Filter):
    """Passwords of ``scheme://user:password@`` URIs never reach a log line (a NATS sink configured with one
    names its URI in many messages)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "@" in text and (clean := redact(text)) != text:
            record.msg, record.args = clean, None
        return True


def configure(fmt: str = "human", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Redact())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # the agent's own loggers are named "hoststamp.*"; some modules log under their module name ("agent.*")
    for name in ("hoststamp", "agent"):
        root = logging.getLogger(name)
        root.handlers[:] = [handler]
        root.setLevel(level)
        root.propagate = False
