"""The receiver: guest events in over unix, vsock and Firecracker sockets, acked when durable.

:class:`Receiver` runs one listener; the pipeline supplies ``deliver``
(:data:`Deliver`). The checks are pure functions in :mod:`.validate`, the
signature policy is :class:`GuestPolicy`, duplicates are caught by
:class:`DedupeWindow`.
"""

from __future__ import annotations

from .dedupe import DedupeWindow
from .glue import PipelineDeliver, serve_listener
from .memory import MemoryBatchDeliver, MemoryDeliver
from .policy import GuestPolicy
from .server import Deliver, Receiver
from .telemetry import ReceiverStats, RejectLog
from .validate import REASONS, Rejected, check_attributes, json_depth, parse_event

__all__ = [
    "REASONS",
    "DedupeWindow",
    "Deliver",
    "GuestPolicy",
    "MemoryBatchDeliver",
    "MemoryDeliver",
    "PipelineDeliver",
    "Receiver",
    "ReceiverStats",
    "RejectLog",
    "Rejected",
    "check_attributes",
    "json_depth",
    "parse_event",
    "serve_listener",
]
