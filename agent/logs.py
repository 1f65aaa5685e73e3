"""Logging set-up: human lines by default, one JSON object per line with ``json``."""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Hashable

import orjson

from .transport.uri import redact

__all__ = ["JsonFormatter", "OncePerKey", "configure"]


class OncePerKey:
    """Log a peer-caused problem the first time a key (peer, reason ...) is seen; count the rest.

    Memory is bounded: past ``max_keys`` the least recently seen key is
    forgotten (and would be logged again), so a stream of new peers cannot grow it.
    """

    def __init__(self, logger: logging.Logger, *, max_keys: int = 1024, level: int = logging.WARNING) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.logger = logger
        self.max_keys = max_keys
        self.level = level
        self._seen: OrderedDict[Hashable, int] = OrderedDict()

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
        """Log ``msg % args`` if ``key`` is new; True when a line was written."""
        if not self.first(key):
            return False
        self.logger.log(self.level, msg + " (repeats from this peer are counted, not logged)", *args)
        return True


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
