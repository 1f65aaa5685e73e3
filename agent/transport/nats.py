"""NATS endpoints and connections, shared by the ``nats://`` sink and listener.

``nats://[USER:PASS@]HOST:PORT/SUBJECT[?key=value&...]`` is parsed by
:func:`parse_nats_uri` (no I/O). :func:`connect` opens one nats-py connection
with the client's own reconnect turned off: a connection is either live or
gone, and the sink and the listener reconnect on their own schedule (full-jitter
backoff), rebuilding what hangs off a connection (ack inbox, pull
subscription). Every foreign error is translated here, at one boundary, into
:class:`~agent.errors.TransportError` by :func:`nats_errors`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from cryptography.hazmat.primitives.asymmetric import ed25519
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType

from ..errors import ConfigError, SigningError, TransportError
from ..signing.keys import read_key_file

__all__ = [
    "FOREIGN_ERRORS",
    "NatsCredentials",
    "NatsEndpoint",
    "connect",
    "creds_problem",
    "describe",
    "ensure_stream",
    "load_creds",
    "name_problem",
    "nats_errors",
    "parse_nats_uri",
    "subject_problem",
]

log = logging.getLogger("agent.transport.nats")

#: what the NATS client and the socket layer under it raise; mapped to TransportError
FOREIGN_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, OSError, asyncio.TimeoutError, EOFError)


@dataclass(frozen=True, slots=True)
class NatsEndpoint:
    """``server`` is ``nats://[user:pass@]host:port``; ``subject`` the path (possibly a template)."""

    server: str
    subject: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def display(self) -> str:
        """The server without credentials, for logs."""
        parts = urlsplit(self.server)
        return f"nats://{parts.hostname}:{parts.port}"


#: what a stream or consumer name may not hold (the server refuses these, and only when it is asked)
_NAME_BAD = re.compile(r"[\s.*>/\\]")


def name_problem(name: str, what: str) -> str | None:
    """Why ``name`` cannot name a JetStream stream or consumer (``what``), or None."""
    if not name:
        return f"{what} name is empty"
    if _NAME_BAD.search(name) or not name.isprintable():
        return f"{what} name {name!r} may not hold white space, '.', '*', '>', '/' or '\\'"
    return None


#: what the lines of a credentials file between its section markers hold (a JWT, a seed)
_CREDS_VALUE = re.compile(rb"[A-Za-z0-9_\-.=]+")
#: the first byte of a decoded nkey seed (its top five bits), and the nkey type of a user
_SEED_PREFIX = 18 << 3
_USER_PREFIX = 20 << 3


class NatsCredentials:
    """A user JWT and the signing key of its seed, read once from a credentials file (``nsc`` writes these).

    The client is handed :meth:`user_jwt` and :meth:`sign` (its ``user_jwt_cb`` and ``signature_cb``), so it
    never opens the file itself: at every (re)connect it would, on the event loop, and a file replaced
    meanwhile by a FIFO or a device would hold the loop. The nonce is signed here with Ed25519, as the
    ``nkeys`` package would: no other package is needed."""

    __slots__ = ("_jwt", "_key", "path")

    def __init__(self, path: str, jwt: bytes, key: ed25519.Ed25519PrivateKey) -> None:
        self.path = path
        self._jwt = jwt
        self._key = key

    def __repr__(self) -> str:  # never the JWT or the key
        return f"NatsCredentials({self.path!r})"

    def user_jwt(self) -> bytes:
        return self._jwt

    def sign(self, nonce: str) -> bytes:
        """The server's nonce signed with the user's key, base64 (URL alphabet, unpadded, as NATS clients send)."""
        return base64.urlsafe_b64encode(self._key.sign(nonce.encode())).rstrip(b"=")


def _section(text: bytes, marker: bytes) -> bytes | None:
    """The first non-empty line after the line holding ``marker``, if it is one value."""
    lines = iter(text.splitlines())
    for line in lines:
        if marker in line:
            for value in lines:
                if value.strip():
                    value = value.strip()
                    return value if _CREDS_VALUE.fullmatch(value) else None
    return None


def _user_seed(seed: bytes) -> ed25519.Ed25519PrivateKey:
    """The Ed25519 key of an nkey user seed (``SU...``: base32 of two prefix bytes, 32 key bytes, a CRC-16)."""
    try:
        raw = base64.b32decode(seed + b"=" * (-len(seed) % 8))
    except binascii.Error:
        raise ValueError("the seed is not base32") from None
    if len(raw) != 36 or int.from_bytes(raw[-2:], "little") != binascii.crc_hqx(raw[:-2], 0):
        raise ValueError("the seed is damaged (its length or checksum is wrong)")
    if raw[0] & 0xF8 != _SEED_PREFIX:
        raise ValueError("the seed section does not hold a seed")
    if ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3) != _USER_PREFIX:
        raise ValueError("the seed is not a user's (SU...)")
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw[2:34])


def load_creds(path: str) -> NatsCredentials:
    """The credentials of the file ``path``, read as a key file is (:func:`~agent.signing.keys.read_key_file`:
    a regular file of at most 64 KiB, opened without blocking); a ConfigError saying why not."""
    if not path:
        raise ConfigError("empty path (leave the key out to connect without credentials)")
    try:
        text = read_key_file(path, "credentials")
    except SigningError as exc:
        raise ConfigError(str(exc)) from None
    jwt = _section(text, b"BEGIN NATS USER JWT")
    seed = _section(text, b"BEGIN USER NKEY SEED")
    for value, section in ((jwt, "BEGIN NATS USER JWT"), (seed, "BEGIN USER NKEY SEED")):
        if value is None:
            raise ConfigError(f"{path}: not a NATS credentials file (no {section} section)")
    assert jwt is not None and seed is not None
    if jwt.count(b".") != 2:
        raise ConfigError(f"{path}: the BEGIN NATS USER JWT section does not hold a JWT")
    try:
        key = _user_seed(seed)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return NatsCredentials(path, jwt, key)


def creds_problem(path: str) -> str | None:
    """Why the credentials file ``path`` cannot be used to connect (see :func:`load_creds`), or None."""
    try:
        load_creds(path)
    except ConfigError as exc:
        return exc.reason
    return None


def subject_problem(subject: str) -> str | None:
    """Why ``subject`` cannot be subscribed to (tokens separated by dots, ``*`` a whole token, ``>`` a whole
    last one, no white space), or None."""
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token:
            return f"subject {subject!r} has an empty token"
        if any(c.isspace() for c in token) or not token.isprintable():
            return f"subject {subject!r} holds white space"
        if ("*" in token and token != "*") or (">" in token and (token != ">" or i != len(tokens) - 1)):
            return f"subject {subject!r}: '*' is a whole token, '>' a whole last token"
    return None


def parse_nats_uri(uri: str, *, key: str = "uri", params: tuple[str, ...] = ()) -> NatsEndpoint:
    """Split a ``nats://`` URI; ``params`` lists the query keys allowed (others are errors)."""
    if any(c.isspace() for c in uri):  # urlsplit would drop a tab or a line break without a word
        raise ConfigError(f"{uri!r}: white space in a nats:// URI (percent-encode it where it is meant)", key=key)
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{uri!r}: {exc}", key=key) from None
    if parts.scheme.lower() != "nats" or not parts.netloc:
        raise ConfigError(f"{uri!r}: expected nats://HOST:PORT/SUBJECT", key=key)
    if not parts.hostname:
        raise ConfigError(f"{uri!r}: no host", key=key)
    subject = unquote(parts.path.lstrip("/"))
    if not subject:
        raise ConfigError(f"{uri!r}: no subject (expected nats://HOST:PORT/SUBJECT)", key=key)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    if len(query) < len(pairs):
        twice = next(n for i, (n, _) in enumerate(pairs) if any(m == n for m, _ in pairs[:i]))
        raise ConfigError(f"{uri!r}: query parameter {twice!r} given more than once", key=key)
    for name in query:
        if name not in params:
            allowed = ", ".join(params) or "none"
            raise ConfigError(f"{uri!r}: unknown query parameter {name!r} (allowed: {allowed})", key=key)
    userinfo = parts.netloc.rpartition("@")[0]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    server = f"nats://{userinfo + '@' if userinfo else ''}{host}:{port or 4222}"
    return NatsEndpoint(server=server, subject=subject, params=query)


@contextlib.contextmanager
def nats_errors(what: str) -> Iterator[None]:
    """Translate anything the client raises into TransportError (``what`` prefixes the message)."""
    try:
        yield
    except TransportError:
        raise
    except FOREIGN_ERRORS as exc:
        raise TransportError(f"{what}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """``str(exc)``, or the class name when that is empty or itself fails (some client errors do)."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    return text or type(exc).__name__


async def _quiet_error(exc: Exception) -> None:
    log.debug("nats client: %s", exc)


async def connect(
    server: str,
    *,
    name: str = "hoststamp",
    timeout: float = 2.0,
    creds: NatsCredentials | None = None,
    pending_size: int = 8 << 20,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """One connection with client-side reconnect off; TransportError when the server cannot be reached.

    The user and password of ``nats://USER:PASSWORD@HOST:PORT`` are percent-decoded (RFC 3986: an ``@`` or
    ``:`` in them is written ``%40``, ``%3A``) and given to the client apart; a user alone is a token.
    ``creds``: the user JWT and key to answer the server's nonce with, when it asks for them."""
    userinfo, _, hostport = server.partition("://")[2].rpartition("@")
    opts: dict[str, Any] = {
        "servers": [f"nats://{hostport}"],
        "name": name,
        "connect_timeout": max(1, round(timeout)),
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,  # 0 would mean "forever" for the first connect
        "reconnect_time_wait": 0.01,
        "error_cb": _quiet_error,
        "pending_size": pending_size,
    }
    if userinfo:
        user, colon, password = userinfo.partition(":")
        if colon:
            opts["user"], opts["password"] = unquote(user), unquote(password)
        else:
            opts["token"] = unquote(user)
    if creds is not None:  # the file read and checked already: the client never opens it (see NatsCredentials)
        opts["user_jwt_cb"] = creds.user_jwt
        opts["signature_cb"] = creds.sign
    if on_disconnect is not None:
        opts["disconnected_cb"] = on_disconnect
    with nats_errors(f"connect {server.rpartition('@')[2]}"):
        async with asyncio.timeout(timeout + 1.0):
            return await nats.connect(**opts)


#: JetStream's error code for a new stream whose subjects overlap an existing stream's
_SUBJECTS_OVERLAP = 10065


async def ensure_stream(
    js: JetStreamContext,
    name: str,
    subjects: list[str],
    *,
    storage: str = "file",
    duplicate_window: float = 120.0,
) -> bool:
    """Create stream ``name`` over ``subjects`` unless it exists; True when it was created."""
    with nats_errors(f"stream {name}"):
        try:
            await js.stream_info(name)
            return False
        except nats.js.errors.NotFoundError:
            pass
        try:
            await js.add_stream(
                name=name,
                subjects=subjects,
                storage=StorageType.MEMORY if storage == "memory" else StorageType.FILE,
                duplicate_window=duplicate_window,
            )
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _SUBJECTS_OVERLAP:
                raise
            # a stream already takes (some of) these subjects: the events go there; one that takes none of an
            # event's subject is said by the publish itself
            log.warning("stream %s not created: its subjects %s overlap a stream already there; each event goes "
                        "to a stream that takes its subject, if one does", name, ", ".join(subjects))
            return False
        log.info("created JetStream stream %s for %s", name, ", ".join(subjects))
        return True
