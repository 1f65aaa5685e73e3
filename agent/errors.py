"""The one exception tree of hoststamp.

Everything the agent raises on purpose derives from :class:`AgentError`; foreign
exceptions (``OSError``, ``ValueError`` from a parser, ``cryptography``'s
``InvalidSignature`` ...) are translated at the boundary that meets them::

    AgentError
    ├── ConfigError            bad configuration: names the file and the key
    ├── ProbeError             a probe could not read what it reads
    │   └── ParseError         the text or bytes it read do not parse
    ├── TransportError         a socket or peer failed
    │   └── FramingError       a frame is malformed or too large
    ├── SigningError           a key cannot be loaded or used
    │   └── VerifyError        an event or record fails verification
    ├── SinkError              a sink could not take a batch
    └── ArchiveError           an archive cannot do what was asked (no such event, no checkpoint yet)

The CLI turns these into messages and exit codes (2 for ``ConfigError`` and
usage errors, 1 for the rest); nothing else in the package prints or exits.
"""

from __future__ import annotations

import re

__all__ = [
    "AgentError",
    "ArchiveError",
    "ConfigError",
    "FramingError",
    "ParseError",
    "ProbeError",
    "SigningError",
    "SinkError",
    "TransportError",
    "UsageError",
    "VerifyError",
]

#: the command line's exit codes (not errors, so not in ``__all__``): ok; a failure found (verify) or a runtime
#: failure; bad usage or configuration
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class AgentError(Exception):
    """Root of every error hoststamp raises on purpose."""


class UsageError(AgentError):
    """Bad command-line usage: exit 2."""


class ConfigError(AgentError):
    """A configuration value is missing, unknown or invalid.

    ``file`` and ``key`` locate the problem; ``str()`` includes both so the CLI
    can print it as is.
    """

    def __init__(self, reason: str, *, key: str | None = None, file: str | None = None) -> None:
        self.reason = reason
        self.key = key
        self.file = file
        where = "".join(f"{shown(p)}: " for p in (file, key) if p)
        super().__init__(redact(f"{where}{reason}"))


#: the password of a ``scheme://user:password@`` in any text, to the last ``@`` of the authority
_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*:/{0,2}[^/@\s:]*):[^/\n]*@")
#: a NATS token: the user information of ``nats://TOKEN@`` without a password is the credential itself
_TOKEN = re.compile(r"(nats://)[^/@:\s]+@", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by ``***``: what is shown
    (metrics labels, the status, logs, configuration problems) never carries a secret a URI was configured
    with."""
    return _TOKEN.sub(r"\1***@", _PASSWORD.sub(r"\1:***@", text)) if "@" in text else text


#: what would break a line, or reorder it on a terminal (the bidirectional formatting characters)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\u061c]")


def shown(name: str) -> str:
    """A file or key name as one line that shows what it holds (a key may be any TOML string, and a newline in it
    would forge a line of the report): control characters as ``\\xNN`` (``\\u00NN`` above ``\\x7f``, as
    :func:`agent.model.escape_text` writes them), the line separators and bidirectional marks as ``\\uNNNN``."""
    return _UNPRINTABLE.sub(_escape, name) if _UNPRINTABLE.search(name) else name


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


class ProbeError(AgentError):
    """A probe failed to read its input."""


class ParseError(ProbeError):
    """Input was read but could not be parsed."""


class TransportError(AgentError):
    """A transport or peer failed."""


class FramingError(TransportError):
    """A frame is malformed or exceeds the size limit."""


class SigningError(AgentError):
    """A key could not be loaded, or a signature could not be made."""


class VerifyError(SigningError):
    """An event, record or checkpoint failed verification."""


class SinkError(AgentError):
    """A sink could not take a batch (transient unless stated otherwise)."""


class Undeliverable(SinkError):
    """A sink will never take this event (it is larger than the sink can carry): sending it again cannot help."""


class ArchiveError(AgentError):
    """An archive cannot do what was asked (no such event, no checkpoint yet, an unreadable bundle)."""
