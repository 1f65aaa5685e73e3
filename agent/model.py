"""The data that flows through the pipeline: readings in, signed events out."""

from __future__ import annotations

import hashlib
import re
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["MAX_KEPT_NAME", "NOT_IN_STRINGS", "Event", "Reading", "bounded_name", "cut", "escape_text",
           "event_type", "not_utf8"]

#: the longest name a guest chooses (a ``source``, an ``id``) that is kept as it is; longer ones by their digest
MAX_KEPT_NAME = 256


def bounded_name(text: str) -> str:
    """``text`` as a key kept in memory or in a file: itself up to :data:`MAX_KEPT_NAME` characters, else its
    SHA-256 (so a guest's megabyte-long names cost the host a few bytes each, and stay told apart)."""
    if len(text) <= MAX_KEPT_NAME:
        return text
    return "#sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


#: what a CloudEvents String may not hold (the spec's type system): the control characters U+0000-U+001F and
#: U+007F-U+009F, surrogates, and the noncharacters
NOT_IN_STRINGS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
                            + "".join(f"{chr(p + 0xFFFE)}{chr(p + 0xFFFF)}" for p in range(0, 0x110000, 0x10000))
                            + "]")


def cut(text: str, n: int) -> str:
    """``text`` in at most ``n`` characters: when it is longer, its first ``n - 1`` and ``…``, so a reader sees
    that it was cut."""
    return text if len(text) <= n else text[: n - 1] + "…"


def not_utf8(data: bytes, of: str = "") -> str | None:
    """Where ``data`` is not UTF-8, in words (JSON parsers say "surrogates not allowed" of any such byte), the
    offset said to be ``of`` something (`` of the line``); None when it is UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8 (byte 0x{data[bad.start]:02x} at offset {bad.start}{of})"
    return None


def escape_text(text: str, *, attribute: bool = False) -> str:
    """``text`` as valid Unicode: each byte of a name the kernel gave that is not UTF-8 (which Python holds as a
    lone surrogate) becomes ``\\xNN``; any other lone surrogate becomes ``\\uNNNN``. With ``attribute``, also
    what a CloudEvents attribute may not hold (a newline in a directory name, say): a control character becomes
    ``\\xNN`` (``\\u00NN`` above ``\\x7f``), a noncharacter ``\\uNNNN`` (``\\UNNNNNNNN`` above U+FFFF).
    Text with nothing to escape is returned as it is."""
    try:
        text.encode()
        if not attribute or NOT_IN_STRINGS.search(text) is None:
            return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        c = ord(ch)
        if 0xDC80 <= c <= 0xDCFF:  # a byte os.fsdecode kept (surrogateescape)
            out.append(f"\\x{c - 0xDC00:02x}")
        elif 0xD800 <= c <= 0xDFFF:
            out.append(f"\\u{c:04x}")
        elif attribute and NOT_IN_STRINGS.match(ch):
            out.append(f"\\x{c:02x}" if c < 0x80 else f"\\u{c:04x}" if c <= 0xFFFF else f"\\U{c:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _escaped(value: Any) -> Any:
    """``value`` with every string in it (keys too) passed through :func:`escape_text`."""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, Mapping):
        return {escape_text(k) if isinstance(k, str) else k: _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v) for v in value]
    return value


def event_type(domain: str, probe: str, kind: str = "") -> str:
    """``io.hoststamp.<domain>.v1.<probe>[.<kind>]``."""
    base = f"io.hoststamp.{domain}.v1.{probe}"
    return f"{base}.{kind}" if kind else base


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement made by a probe, before it is stamped and signed.

    ``probe`` is the registry name of the probe family (``cgroup``); ``kind``
    names a sub-stream (``exit`` for the taskstats exit stream, ``change`` for
    watch-driven readings) and becomes a suffix of the event type. ``output``
    is the parsed result, a JSON-compatible mapping; ``inputs`` lists what was
    read (paths, netlink families). A failed reading carries ``error`` and an
    empty ``output``.
    """

    probe: str
    subject: str
    output: Mapping[str, Any]
    inputs: tuple[str, ...] = ()
    probe_source: str = ""
    kind: str = ""
    error: str | None = None
    time: float = field(default_factory=_time.time)
    domain: str = "host"

    @property
    def type(self) -> str:
        return event_type(self.domain, self.probe, self.kind)

    def escaped(self) -> Reading:
        """This reading with its text made valid Unicode (:func:`escape_text`): what the kernel names in bytes
        that are not UTF-8 (a cgroup directory, a mount point, a link) can then be signed."""
        return replace(self, subject=escape_text(self.subject, attribute=True), output=_escaped(self.output),
                       inputs=tuple(escape_text(str(i)) for i in self.inputs),
                       probe_source=escape_text(self.probe_source), kind=escape_text(self.kind),
                       error=None if self.error is None else escape_text(self.error))

    def data(self) -> dict[str, Any]:
        """The CloudEvent ``data`` object for this reading."""
        d: dict[str, Any] = {
            "probeSource": self.probe_source,
            "inputs": list(self.inputs),
            "output": dict(self.output),
        }
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass(slots=True)
class Event:
    """A signed CloudEvent, ready for sinks.

    ``body`` is the structured-mode JSON of the event (UTF-8, no trailing
    newline): exactly the bytes a file sink writes as one line or a socket sink
    sends as one frame. ``sequence`` is the host stamp's per-source counter.
    Not frozen only because a frozen dataclass costs four times as much to
    make, and one is made per event: treat it as immutable.
    """

    id: str
    source: str
    type: str
    sequence: int
    body: bytes
