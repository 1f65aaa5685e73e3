"""Stream transports: unix, vsock and Firecracker hybrid vsock; bytes only.

Public names: the interfaces (:class:`ByteStream`, :class:`Listener`), endpoint
parsing (:func:`parse_endpoint`), :func:`connect`, :func:`listen`,
:func:`dialer`, the ack protocol (:class:`Ack`, :class:`Outbox`), the reliable
sender (:class:`AckedSender`, :class:`Backoff`), ``hoststamp send``
(:func:`send_ndjson`) and the in-memory fake (:mod:`.memory`).
"""

from __future__ import annotations

from .ack import Ack, Outbox, decode_ack, encode_ack
from .base import RECEIVE_SIZE, ByteStream, Dialer, Listener
from .dial import connect, dialer, listen
from .memory import MemoryListener, MemoryStream, memory_pair
from .send import SendReport, send_ndjson
from .sender import AckedSender, Backoff, SenderStats
from .unix import peer_credentials
from .uri import SCHEMES, Endpoint, FcVsockEndpoint, UnixEndpoint, VsockEndpoint, parse_endpoint
from .vsock import vsock_available

__all__ = [
    "RECEIVE_SIZE",
    "SCHEMES",
    "Ack",
    "AckedSender",
    "Backoff",
    "ByteStream",
    "Dialer",
    "Endpoint",
    "FcVsockEndpoint",
    "Listener",
    "MemoryListener",
    "MemoryStream",
    "Outbox",
    "SendReport",
    "SenderStats",
    "UnixEndpoint",
    "VsockEndpoint",
    "connect",
    "decode_ack",
    "dialer",
    "encode_ack",
    "listen",
    "memory_pair",
    "parse_endpoint",
    "peer_credentials",
    "send_ndjson",
    "vsock_available",
]
