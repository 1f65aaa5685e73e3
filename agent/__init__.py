"""hoststamp: host telemetry as signed, verifiable CloudEvents.

The public names are the data model, the error tree, signing and verification,
and the agent itself; everything else is implementation and may change.
"""

from .errors import (
    AgentError,
    ArchiveError,
    ConfigError,
    FramingError,
    ParseError,
    ProbeError,
    SigningError,
    SinkError,
    TransportError,
    VerifyError,
)
from .model import Event, Reading
from .signing import SigningKey, VerifyKey, load_signing_key, load_verify_key, sign_event, verify_event

__version__ = "0.1.0"

__all__ = [
    "AgentError",
    "ArchiveError",
    "ConfigError",
    "Event",
    "FramingError",
    "ParseError",
    "ProbeError",
    "Reading",
    "SigningError",
    "SigningKey",
    "SinkError",
    "TransportError",
    "VerifyError",
    "VerifyKey",
    "__version__",
    "load_signing_key",
    "load_verify_key",
    "sign_event",
    "verify_event",
]
