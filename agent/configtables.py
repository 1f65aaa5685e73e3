"""The tables of a configuration as frozen dataclasses, each checking its own values.

``[agent]`` is :class:`AgentSettings`; each ``[probes.NAME]`` is :class:`ProbeCommon`
plus the probe's ``Options``, made into a :class:`ProbeConfig`; each ``[[sinks]]`` is
:class:`SinkCommon` plus the sink's ``Options``, made into an :class:`EndpointConfig`;
each ``[[listeners]]`` is :class:`ListenerOptions`; ``[metrics]`` is
:class:`MetricsConfig`. A ``__post_init__`` check raises ``ValueError`` naming its key
first, which :func:`agent.schema.build` turns into a ConfigError naming the dotted key.
Nothing here reads a file: :mod:`agent.config` reads and assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .model import NOT_IN_STRINGS
from .probes import registry as probe_registry
from .transport.uri import split_hostport

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_JSON_DEPTH",
    "SPOOL_MIN_BYTES",
    "AgentSettings",
    "EndpointConfig",
    "ListenerOptions",
    "MetricsConfig",
    "Overflow",
    "ProbeCommon",
    "ProbeConfig",
    "SinkCommon",
]

Overflow = Literal["block", "drop_newest", "drop_oldest"]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """``[agent]``: who the agent is and where it keeps state."""

    #: host id stamped into every event; default: /etc/machine-id, then the hostname
    host_id: str | None = None
    #: the host's private key (PKCS#8 PEM)
    key: str = "keys/host.key"
    #: where per-source sequence counters (and spools) live
    state_dir: str = "var/state"
    log_format: Literal["human", "json"] = "human"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: seconds SIGTERM may spend draining queues before what is left stays spooled
    drain_timeout: float = 10.0
    #: processes that stamp and sign guest events (0: all in the event loop; see docs/delivery.md)
    sign_workers: int = 0
    #: threads that sign guest events beside the event loop, with the native signer (see docs/delivery.md)
    sign_threads: int = 0

    def __post_init__(self) -> None:
        if self.host_id is not None and NOT_IN_STRINGS.search(self.host_id):
            raise ValueError("host_id: holds a control character or a noncharacter, which a CloudEvents string "
                             f"may not: {self.host_id!r}")
        if not self.state_dir:
            raise ValueError("state_dir must be a directory (not empty)")
        if self.drain_timeout < 0:
            raise ValueError("drain_timeout must not be negative")
        for key in ("sign_workers", "sign_threads"):
            if not 0 <= getattr(self, key) <= 64:
                raise ValueError(f"{key} must be between 0 and 64")
        if self.sign_workers and self.sign_threads:
            raise ValueError("sign_threads and sign_workers are two ways to use more cores: set one of them")


@dataclass(frozen=True, slots=True)
class ProbeCommon:
    #: unset: on when the table is present, else on when the probe works on this host
    enabled: bool | None = None
    interval: float | None = None
    timeout: float | None = None
    #: fraction of the interval by which each round may start late, at random
    jitter: float = 0.1


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    name: str
    #: ``None``: decided by :meth:`available` when the agent starts (no I/O while parsing)
    enabled: bool | None
    interval: float
    timeout: float
    jitter: float
    options: Any

    def available(self) -> bool:
        return probe_registry.get(self.name).unavailable(self.options) is None


#: the smallest spool (``spool_max_bytes``): one segment
SPOOL_MIN_BYTES = 4096


@dataclass(frozen=True, slots=True)
class SinkCommon:
    """Keys every ``[[sinks]]`` entry accepts besides its scheme's own."""

    uri: str
    queue_size: int = 10000
    overflow: Overflow = "block"
    batch_max: int = 512
    #: directory of a write-ahead spool for this sink (none by default)
    spool: str | None = None
    spool_max_bytes: int = 256 << 20
    spool_fsync: Literal["always", "batch", "never"] = "batch"

    def __post_init__(self) -> None:
        if self.spool is not None and not self.spool:
            raise ValueError("spool must be a directory (not empty; leave the key out for no spool)")
        if self.queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if self.batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if self.spool_max_bytes < SPOOL_MIN_BYTES:
            raise ValueError(f"spool_max_bytes must be at least {SPOOL_MIN_BYTES}")


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One sink: its URI split into scheme and target, common keys, scheme options."""

    uri: str
    scheme: str
    target: str
    common: SinkCommon
    options: Any
    #: where the URI came from, as an error names it: ``sinks[0].uri``, ``--sink``
    key: str = "sinks.uri"


#: the deepest guest JSON a listener may be configured to take
MAX_JSON_DEPTH = 128
#: attributes of one guest event, at most, by default (``data`` counts as one): real events carry a few dozen, and
#: each costs the stamp a digest, so a frame of 70,000 would hold the event loop for a fifth of a second
MAX_ATTRIBUTES = 1000


@dataclass(frozen=True, slots=True)
class ListenerOptions:
    """``[[listeners]]``: where guest events come in, and how hard to be on them."""

    uri: str
    #: the ``hostpeer`` value stamped on events from this listener (Firecracker sockets)
    name: str | None = None
    max_frame: int = 1 << 20
    max_connections: int = 256
    #: connections of one peer at once, at most: a unix peer is its uid, a vsock peer its CID (a Firecracker
    #: socket's connections all come from its one VM: ``max_connections`` alone bounds them); default
    #: :attr:`peer_connections`
    max_connections_per_peer: int | None = None
    idle_timeout: float = 300.0
    max_depth: int = 32
    max_attributes: int = MAX_ATTRIBUTES
    guest_signatures: Literal["off", "verify", "require"] = "off"
    #: public keys (PEM files) trusted for guest signatures
    trusted_keys: tuple[str, ...] = ()
    dedupe_window: int = 65536
    #: frames per connection handed on and not yet durable, at most (then the connection is not read)
    max_inflight: int = 1024
    #: bytes of frames handed on and not yet durable, of all the listener's connections, at most
    max_unsettled_bytes: int = 64 << 20
    #: permission bits of a unix or Firecracker socket file (e.g. 0o660); default: as the umask leaves them
    mode: int | None = None

    def __post_init__(self) -> None:
        if self.name is not None and (not self.name.strip() or NOT_IN_STRINGS.search(self.name)):
            # it is stamped as hostpeer, a CloudEvents string, on every event of the listener
            raise ValueError(f"name must be text that says which socket (not blank, no control character), "
                             f"got {self.name!r:.60}")
        if not 1 <= self.max_frame <= 0xFFFFFFFF:
            raise ValueError("max_frame must be between 1 and 4294967295")
        for key in ("max_connections", "max_depth", "max_attributes", "max_inflight", "max_unsettled_bytes"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1")
        per_peer = self.max_connections_per_peer
        if per_peer is not None and not 1 <= per_peer <= self.max_connections:
            raise ValueError(f"max_connections_per_peer must be between 1 and max_connections ({self.max_connections})")
        if self.max_depth > MAX_JSON_DEPTH:
            raise ValueError(f"max_depth must be at most {MAX_JSON_DEPTH} (the event JSON itself nests the data "
                             "once more, and JSON encoders stop not far above)")
        if self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be greater than 0")
        if self.dedupe_window < 0:
            raise ValueError("dedupe_window must not be negative")
        if self.mode is not None and not 0 <= self.mode <= 0o7777:
            raise ValueError("mode must be permission bits, e.g. 0o660")

    @property
    def peer_connections(self) -> int:
        """Connections one peer may hold at once: ``max_connections_per_peer``; by default, on a ``vsock:``
        listener (where each guest VM is a peer) a quarter of ``max_connections`` (at least 1), so that one guest
        cannot take every place; elsewhere ``max_connections`` (the local processes of a unix socket often share
        one uid: root in every container)."""
        if self.max_connections_per_peer is not None:
            return self.max_connections_per_peer
        if self.uri.startswith("vsock:"):
            return max(1, self.max_connections // 4)
        return self.max_connections


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: ``listen = "HOST:PORT"`` serves Prometheus text at ``/metrics`` (off when absent)."""

    listen: str | None = None

    def __post_init__(self) -> None:
        if self.listen is not None:
            try:
                split_hostport(self.listen)
            except ValueError as exc:
                raise ValueError(f"listen: {exc}") from None
