"""Configuration: TOML in, frozen dataclasses out.

The file has ``[agent]``, ``[probes.NAME]``, ``[[sinks]]``, ``[[listeners]]`` and
``[metrics]``. Every unknown key is a :class:`~agent.errors.ConfigError` that
names the file and the dotted key. Per-probe and per-sink keys are checked
against the ``Options`` dataclass the probe or sink declares; the dataclasses of
the tables are in :mod:`agent.configtables` (and importable from here). Nothing
here opens a socket or a key: :mod:`agent.app` builds live objects from what
this returns.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import schema
from .configkeys import locate, shown_key
from .configtables import (
    MAX_JSON_DEPTH,
    SPOOL_MIN_BYTES,
    AgentSettings,
    EndpointConfig,
    ListenerOptions,
    MetricsConfig,
    Overflow,
    ProbeCommon,
    ProbeConfig,
    SinkCommon,
)
from .errors import ConfigError, SigningError, SinkError
from .probes import registry as probe_registry
from .sinks import registry as sink_registry
from .sinks.base import SinkContext
from .transport.uri import split_hostport

__all__ = [
    "MAX_JSON_DEPTH",
    "SPOOL_MIN_BYTES",
    "AgentSettings",
    "Config",
    "EndpointConfig",
    "ListenerOptions",
    "MetricsConfig",
    "Overflow",
    "ProbeCommon",
    "ProbeConfig",
    "SinkCommon",
    "default_config",
    "load",
    "parse",
    "split_hostport",
]

ENV_KEY = "HOSTSTAMP_KEY"
ENV_HOST_ID = "HOSTSTAMP_HOST_ID"
#: what a string holding a NUL character is told, wherever it is (no path, name or URI holds one)
NUL_REASON = "must not hold a NUL character"


@dataclass(frozen=True, slots=True)
class Config:
    agent: AgentSettings = field(default_factory=AgentSettings)
    probes: tuple[ProbeConfig, ...] = ()
    sinks: tuple[EndpointConfig, ...] = ()
    listeners: tuple[ListenerOptions, ...] = ()
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    #: the file this came from, if any
    path: str | None = None

    def __post_init__(self) -> None:
        own = {_unix_address(ln.uri[len("unix:"):]) for ln in self.listeners if ln.uri.startswith("unix:")}
        for ep in self.sinks:
            if ep.scheme == "unix" and _unix_address(ep.target) in own:
                raise ConfigError(f"{ep.uri!r} is this agent's own listener: what it sends there would come back "
                                  "to it as a guest's, and wait on itself", key=ep.key, file=self.path)

    def warnings(self) -> list[tuple[str, str]]:
        """(key, reason) of what runs but does nothing (as ``config check`` warns of it), for ``run`` to log."""
        return unused_keys([(ln.uri, {"name": ln.name, "mode": ln.mode,
                                      "max_connections_per_peer": ln.max_connections_per_peer,
                                      "guest_signatures": ln.guest_signatures, "trusted_keys": ln.trusted_keys})
                            for ln in self.listeners])

    def probe(self, name: str) -> ProbeConfig:
        for p in self.probes:
            if p.name == name:
                return p
        raise KeyError(name)

    def enabled_probes(self) -> list[ProbeConfig]:
        """Probes to run: those switched on, and those left to default that work on this host."""
        return [p for p in self.probes if p.enabled or (p.enabled is None and p.available())]

    def with_probes(self, names: Sequence[str]) -> Config:
        """Only ``names`` enabled (``--probes``); unknown names are a ConfigError."""
        known = {p.name for p in self.probes}
        for n in names:
            if n not in known:
                raise ConfigError(f"unknown probe {n!r} (known: {', '.join(sorted(known))})", key="--probes")
        return replace(self, probes=tuple(replace(p, enabled=p.name in names) for p in self.probes))

    def with_sinks(self, uris: Sequence[str]) -> Config:
        """The config's sinks plus ``--sink`` URIs; one that names a sink already there is not added twice."""
        sinks = list(self.sinks)
        seen = {_sink_identity(ep) for ep in sinks}
        for u in uris:
            ep = endpoint({"uri": u}, prefix="--sink", file=None)
            if _sink_identity(ep) not in seen:
                seen.add(_sink_identity(ep))
                sinks.append(ep)
        return replace(self, sinks=tuple(sinks))

    def with_listeners(self, uris: Sequence[str]) -> Config:
        """The config's listeners and those of ``--listen``; an address given twice is one listener (the
        config's, with its options)."""
        seen = {opts.uri for opts in self.listeners}
        extra = []
        for u in uris:
            if u not in seen:
                seen.add(u)
                extra.append(listener({"uri": u}, prefix="--listen", file=None))
        return replace(self, listeners=self.listeners + tuple(extra))


_PATH_SCHEMES = frozenset(("file", "archive"))


def _unix_address(target: str) -> str:
    """A unix socket's address as the kernel knows it: an abstract name as is, a path made absolute."""
    return target if target.startswith("@") else os.path.normpath(os.path.abspath(target))


def _sink_identity(ep: EndpointConfig) -> tuple[str, str]:
    """Two sinks with the same identity would write every event twice to one place."""
    if ep.scheme in _PATH_SCHEMES:
        return ep.scheme, os.path.normpath(os.path.abspath(ep.target))
    return ep.scheme, ep.target


def endpoint(table: Mapping[str, Any], *, prefix: str, file: str | None) -> EndpointConfig:
    """One ``[[sinks]]`` entry (or ``--sink URI``), its target checked by the sink itself, as ``run`` builds it."""
    if not isinstance(table, Mapping):
        schema.build(SinkCommon, table, prefix=prefix, file=file)  # raises: "expected a table, got ..."
    common_keys = set(schema.field_names(SinkCommon))
    rest = {k: v for k, v in table.items() if k not in common_keys}
    uri_key = prefix if prefix.startswith("--") else f"{prefix}.uri"
    try:
        common = schema.build(SinkCommon, {k: v for k, v in table.items() if k in common_keys}, prefix=prefix,
                              file=file)
    except ConfigError as exc:
        if exc.key == uri_key:  # missing, or not a string
            _no_sink_has(rest, prefix, file)
        raise
    try:
        scheme, target = sink_registry.split_uri(common.uri)
        cls = sink_registry.get(scheme)
    except ConfigError as exc:
        raise ConfigError(exc.reason, key=uri_key, file=file) from None
    options = schema.build(cls.Options, rest, prefix=prefix, file=file, also=common_keys)
    try:  # what the sink cannot take is found now (config check), not when run builds it
        cls(target, options, SinkContext())
    except (SinkError, ValueError) as exc:
        raise ConfigError(str(exc), key=uri_key, file=file) from None
    return EndpointConfig(uri=common.uri, scheme=scheme, target=target, common=common, options=options,
                          key=prefix if prefix.startswith("--") else f"{prefix}.uri")


def _no_sink_has(rest: Mapping[str, Any], prefix: str, file: str | None) -> None:
    """With no URI, so no scheme to check a sink's own keys against, refuse one that no sink can have (not a
    name: empty, or holding a dot): `config check`, which sets a bad URI aside and looks again, names it too."""
    if (odd := next((k for k in rest if not k.isidentifier()), None)) is not None:
        raise ConfigError("unknown key (no sink has a key of that name)", key=f"{prefix}.{shown_key(odd)}",
                          file=file)


def listener(table: Mapping[str, Any], *, prefix: str, file: str | None) -> ListenerOptions:
    """One ``[[listeners]]`` entry (or ``--listen URI``), its URI checked here rather than when it starts listening."""
    opts = schema.build(ListenerOptions, table, prefix=prefix, file=file)
    if opts.guest_signatures != "off" and not opts.trusted_keys:
        raise ConfigError(f"guest_signatures = {opts.guest_signatures!r} needs trusted_keys (PEM public keys)",
                          key=f"{prefix}.trusted_keys", file=file)
    if opts.trusted_keys:  # read now, so that `config check` finds a key that is missing or not a public key
        from .signing.keys import load_verify_keys

        try:
            load_verify_keys(opts.trusted_keys, public_only="a trust store")
        except SigningError as exc:
            raise ConfigError(str(exc), key=f"{prefix}.trusted_keys", file=file) from None
    key = prefix if prefix.startswith("--") else f"{prefix}.uri"
    if opts.uri.lower().startswith("nats:"):
        from .receiver.nats import NatsSourceSettings

        try:
            NatsSourceSettings.from_uri(opts.uri, key=key)
        except ConfigError as exc:
            raise ConfigError(exc.reason, key=key, file=file) from None
    else:
        from .transport.uri import parse_endpoint

        try:
            parse_endpoint(opts.uri, listen=True)
        except ConfigError as exc:
            raise ConfigError(exc.reason, key=key, file=file) from None
    return opts


def repeated_addresses(uris: Sequence[str | None]) -> list[tuple[str, str]]:
    """(key, reason) of each listener whose address an earlier one has: it could never listen."""
    return [(f"listeners[{i}].uri", f"{uri!r} is also listeners[{uris.index(uri)}]: an address takes one listener")
            for i, uri in enumerate(uris) if uri is not None and uri in uris[:i]]


#: listener schemes whose peers the kernel names, so that a ``name`` given to one of them is not used
_KERNEL_NAMED = {"unix": "unix:uid=U,pid=P", "vsock": "vsock:CID"}


def unused_keys(listeners: Sequence[tuple[object, Mapping[str, object]]]) -> list[tuple[str, str]]:
    """(key, reason) of each listener option set that nothing uses, the listeners given as (uri, options set; a
    None value counts as not set): a ``name`` where the kernel names the peer (only a Firecracker (``fcvsock:``)
    or NATS listener stamps its name as ``hostpeer``), a ``mode`` where there is no socket file, a
    ``max_connections_per_peer`` where all connections are one peer's or there are none, ``trusted_keys`` where
    ``guest_signatures`` is off."""
    unused = []
    for i, (uri, table) in enumerate(listeners):
        scheme = uri.partition(":")[0].lower() if isinstance(uri, str) else ""
        if isinstance(table.get("name"), str) and scheme in _KERNEL_NAMED:
            unused.append((f"listeners[{i}].name", f"not used: events from a {scheme}: listener carry the peer the "
                           f"kernel names ({_KERNEL_NAMED[scheme]}) as hostpeer; only fcvsock: and nats: "
                           "listeners stamp their name"))
        if table.get("mode") is not None and scheme in ("vsock", "nats"):
            unused.append((f"listeners[{i}].mode", f"not used: a {scheme}: listener makes no socket file (only "
                           "unix: and fcvsock: listeners do)"))
        if table.get("max_connections_per_peer") is not None and scheme in ("fcvsock", "nats"):
            why = ("every connection of a Firecracker socket comes from its one VM (max_connections bounds them)"
                   if scheme == "fcvsock" else "a nats: listener takes no connections")
            unused.append((f"listeners[{i}].max_connections_per_peer", f"not used: {why}"))
        if table.get("trusted_keys") and table.get("guest_signatures") in (None, "off"):
            unused.append((f"listeners[{i}].trusted_keys", "not used: guest_signatures is off, so no guest signature "
                           "is checked (set it to \"verify\" or \"require\")"))
    return unused


def _probe(name: str, table: Mapping[str, Any], file: str | None, present: bool) -> ProbeConfig:
    cls = probe_registry.get(name)
    common_keys = set(schema.field_names(ProbeCommon))
    prefix = f"probes.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"expected a table ([{prefix}]), got {schema.kind_of(table)}", key=prefix, file=file)
    common = schema.build(ProbeCommon, {k: v for k, v in table.items() if k in common_keys}, prefix=prefix, file=file)
    options = schema.build(cls.Options, {k: v for k, v in table.items() if k not in common_keys},
                           prefix=prefix, file=file, also=common_keys)
    interval = common.interval if common.interval is not None else cls.default_interval
    if interval <= 0:
        raise ConfigError("must be greater than 0", key=f"{prefix}.interval", file=file)
    timeout = common.timeout if common.timeout is not None else max(1.0, min(interval, 30.0))
    if timeout <= 0:
        raise ConfigError("must be greater than 0", key=f"{prefix}.timeout", file=file)
    if not 0.0 <= common.jitter <= 1.0:
        raise ConfigError("must be between 0 and 1 (a fraction of the interval)", key=f"{prefix}.jitter", file=file)
    enabled = common.enabled if common.enabled is not None else (True if present else None)
    return ProbeConfig(name=name, enabled=enabled, interval=interval, timeout=timeout,
                       jitter=common.jitter, options=options)


_TOP_KEYS = ("agent", "probes", "sinks", "listeners", "metrics")


def parse(doc: Mapping[str, Any], *, file: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build a :class:`Config` from a parsed TOML document; a problem names its key as the document has it (an
    empty key shown as ``""``)."""
    try:
        return _parse(doc, file=file, env=env)
    except ConfigError as exc:
        where = locate(doc, "", exc.key) if exc.key is not None else None
        if where is None or where.shown == exc.key:
            raise
        raise ConfigError(exc.reason, key=where.shown, file=exc.file) from None


def _parse(doc: Mapping[str, Any], *, file: str | None, env: Mapping[str, str] | None) -> Config:
    if (where := _nul_at(doc, "")) is not None:  # a path, name or URI never holds one: refused wherever it is
        raise ConfigError(NUL_REASON, key=where, file=file)
    for key in doc:
        if key not in _TOP_KEYS:
            raise ConfigError(f"unknown key (allowed at top level: {', '.join(_TOP_KEYS)})", key=shown_key(key),
                              file=file)
    agent = schema.build(AgentSettings, doc.get("agent", {}), prefix="agent", file=file)
    env = os.environ if env is None else env
    if env.get(ENV_KEY):
        agent = replace(agent, key=env[ENV_KEY])
    if env.get(ENV_HOST_ID):
        try:
            agent = replace(agent, host_id=env[ENV_HOST_ID])
        except ValueError as exc:
            raise ConfigError(f"{ENV_HOST_ID}: {str(exc).removeprefix('host_id: ')}") from None

    probes_doc = doc.get("probes", {})
    if not isinstance(probes_doc, Mapping):
        raise ConfigError("expected a table of [probes.NAME] tables", key="probes", file=file)
    known = probe_registry.names()
    for name in probes_doc:
        if name not in known:
            raise ConfigError(f"unknown probe (known: {', '.join(known)})", key=f"probes.{shown_key(name)}",
                              file=file)
    probes = tuple(_probe(n, probes_doc.get(n, {}), file, n in probes_doc) for n in known)

    sinks_doc = doc.get("sinks", [])
    if not isinstance(sinks_doc, list):
        raise ConfigError("expected an array of tables ([[sinks]])", key="sinks", file=file)
    sinks = tuple(endpoint(t, prefix=f"sinks[{i}]", file=file) for i, t in enumerate(sinks_doc))

    listeners_doc = doc.get("listeners", [])
    if not isinstance(listeners_doc, list):
        raise ConfigError("expected an array of tables ([[listeners]])", key="listeners", file=file)
    listeners = tuple(listener(t, prefix=f"listeners[{i}]", file=file) for i, t in enumerate(listeners_doc))
    for key, reason in repeated_addresses([opts.uri for opts in listeners]):
        raise ConfigError(reason, key=key, file=file)
    metrics = schema.build(MetricsConfig, doc.get("metrics", {}), prefix="metrics", file=file)
    return Config(agent=agent, probes=probes, sinks=sinks, listeners=listeners, metrics=metrics, path=file)


def _nul_at(value: Any, where: str) -> str | None:
    """The key of the first string (a key, or a value) in ``value`` that holds a NUL character, if any."""
    return next(_nuls(value, where), None)


def nul_keys(doc: Mapping[str, Any]) -> list[str]:
    """The key of every string (a key, or a value) of ``doc`` that holds a NUL character, each once, in document
    order (``config check`` lists them all; :func:`parse` refuses the first)."""
    return list(dict.fromkeys(_nuls(doc, "")))


def _nuls(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, str):
        if "\0" in value:
            yield where
    elif isinstance(value, Mapping):
        for k, v in value.items():
            key = f"{where}.{k}" if where else str(k)
            if "\0" in str(k):
                yield key
            else:
                yield from _nuls(v, key)
    elif isinstance(value, list):  # a table in an array is named by its index (sinks[1]), a value by its key
        for i, v in enumerate(value):
            yield from _nuls(v, f"{where}[{i}]" if isinstance(v, Mapping) else where)


def read_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML document of the file at ``path``, read once (it may be a pipe); a ConfigError naming the file
    when it cannot be read or is no TOML. A byte order mark before it is taken as what it is, not as text."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(p)) from None
    try:
        return tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(p)) from None


def load(path: str | os.PathLike[str]) -> Config:
    """Read and parse a TOML file; every problem is a ConfigError naming the file."""
    return parse(read_document(path), file=str(path))


def default_config(env: Mapping[str, str] | None = None) -> Config:
    """The embedded default of ``make run``: every probe that works here, into the archive."""
    cfg = parse({}, env=env)
    uri = "archive:var/archive" if "archive" in sink_registry.schemes() else "file:var/archive/events.ndjson"
    return replace(cfg, sinks=(endpoint({"uri": uri}, prefix="default", file=None),))
