"""The ``/metrics`` HTTP server: a small asyncio HTTP/1.x server in the agent's own event loop.

A scrape reads the counters between two events, never halfway through one, and
no thread shares them. Requests are size- and time-bounded; a peer's malformed
request is logged once per peer; idle connections make room for requests.
Request heads are read as RFC 9112 says: a folded field line (obsolete line
folding) or a field name not followed at once by its colon is a 400, a head
over ``max_request`` bytes a 431 (a 414 when the request line alone is), each
answered before the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import re
from collections.abc import Callable
from typing import NamedTuple

import anyio
from anyio.abc import TaskStatus
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, CONTENT_TYPE_PLAIN_1_0_0, choose_encoder
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import CollectorRegistry

from .logs import OncePerKey
from .transport.uri import split_hostport

__all__ = ["MetricsServer", "accepts_gzip", "negotiate", "replace_server"]

log = logging.getLogger("hoststamp.metrics")

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}
#: a field name (RFC 9110 section 5.1): a token, with nothing between it and the colon
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: what an answer to an oversized request waits for the rest of it, to read it away: closed with unread input, the
#: socket would send a reset that may reach the peer before it read the answer
LINGER = 1.0
LINGER_BYTES = 1 << 20
_INDEX = b"<html><body><h1>hoststamp</h1><p><a href=\"/metrics\">metrics</a></p></body></html>\n"


def _qvalue(value: str) -> float:
    """A q-value (RFC 9110 section 12.4.2), read generously; one that is not a number from 0 to 1 counts as 0."""
    try:
        q = float(value.strip().strip('"'))
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0


def _elements(header: str) -> list[tuple[str, dict[str, str], float]]:
    """The comma-separated elements of an Accept or Accept-Encoding header: ``(name, parameters, q)``, names and
    parameter names in lower case, whitespace around any part ignored, quotes around a value removed."""
    out = []
    for item in header.split(","):
        name, *params = (p.strip() for p in item.split(";"))
        if not name:
            continue
        q = 1.0
        kept: dict[str, str] = {}
        for param in params:
            key, sep, value = param.partition("=")
            key = key.strip().lower()
            if not sep:
                continue
            if key == "q":
                q = _qvalue(value)
            else:
                kept[key] = value.strip().strip('"')
        out.append((name.lower(), kept, q))
    return out


def _qualities(header: str) -> dict[str, float]:
    """Each name of an Accept-Encoding header with its q-value (of several elements naming it, the highest)."""
    quality: dict[str, float] = {}
    for name, _params, q in _elements(header):
        quality[name] = max(q, quality.get(name, 0.0))
    return quality


def accepts_gzip(header: str) -> bool:
    """Whether to gzip for an Accept-Encoding header (RFC 9110 section 12.5.3): gzip (any case, ``x-gzip``
    alike) or ``*`` with a q-value above 0 and not below that of ``identity``, which is 1 unless the header
    names it (or ``*``, when it does not)."""
    quality = _qualities(header)
    named = [quality[n] for n in ("gzip", "x-gzip") if n in quality]
    gzip_q = max(named) if named else quality.get("*", 0.0)
    identity_q = quality.get("identity", quality.get("*", 1.0))
    return gzip_q > 0 and gzip_q >= identity_q


_OPENMETRICS = "application/openmetrics-text"
_TEXT = "text/plain"


def _version_of(content_type: str) -> str:
    """The ``version`` parameter of a Content-Type."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip() == "version":
            return value.strip()
    raise ValueError(f"no version in {content_type!r}")


#: the OpenMetrics version the agent writes, that of prometheus-client's latest content type; a scraper that
#: wants OpenMetrics only in another version gets the text format
_OM_VERSION = _version_of(openmetrics.CONTENT_TYPE_LATEST)
#: the text format's versions: the first is served unless the other is wanted more (1.0.0 names its escaping)
_TEXT_VERSIONS = (_version_of(CONTENT_TYPE_PLAIN_0_0_4), _version_of(CONTENT_TYPE_PLAIN_1_0_0))


class _Wanted(NamedTuple):
    q: float
    #: matched by the type itself (not ``type/*`` or ``*/*``)
    named: bool
    #: the parameters of the range that decided
    params: dict[str, str]


def _preference(ranges: list[tuple[str, dict[str, str], float]], media: str, version: str) -> _Wanted:
    """How much ``media`` in ``version`` is wanted (RFC 9110 section 12.5.1): the q of the most specific range
    that matches it: the type itself with this ``version``, the type with no version, then ``type/*``, then
    ``*/*`` (a range naming another version does not match; of several equally specific, the highest q);
    q 0 when none does."""
    best: tuple[tuple[int, bool], _Wanted] | None = None
    levels = {media: 2, media.split("/")[0] + "/*": 1, "*/*": 0}
    for name, params, q in ranges:
        level = levels.get(name)
        if level is None or params.get("version", version) != version:
            continue
        rank = (level, "version" in params)
        if best is None or rank > best[0] or (rank == best[0] and q > best[1].q):
            best = rank, _Wanted(q, level == 2, params)
    return best[1] if best is not None else _Wanted(0.0, False, {})


def negotiate(accept: str) -> tuple[Callable[[CollectorRegistry], bytes], str]:
    """The encoder and Content-Type for an Accept header: OpenMetrics (in the one version it is written in)
    when it is wanted more than the Prometheus text format (a q-value of 0 refuses a type), or as much and
    named while the text format is not; else the text format, also when the header wants neither (or is absent,
    or wants OpenMetrics only in versions the agent does not write). The Content-Type names the version the
    body is in."""
    ranges = _elements(accept)
    om = _preference(ranges, _OPENMETRICS, _OM_VERSION)
    text, text_version = max(((_preference(ranges, _TEXT, v), v) for v in _TEXT_VERSIONS),
                             key=lambda wv: wv[0].q)  # the first of equal q
    if om.q > 0 and (om.q > text.q or (om.q == text.q and om.named)):
        # the version as asked for (with its escaping), which is the one written; none: the default labels
        wanted = [_OPENMETRICS, *([f"version={_OM_VERSION}"] if "version" in om.params else [])]
        params = om.params
    elif text.q > 0:
        wanted, params = [_TEXT, f"version={text_version}"], text.params
    else:
        return choose_encoder("")
    # prometheus-client picks the name escaping from this parameter, and names it
    if "escaping" in params:
        wanted.append(f"escaping={params['escaping']}")
    return choose_encoder("; ".join(wanted))


class MetricsServer:
    """``GET /metrics`` (text or OpenMetrics, gzip when asked), ``GET /healthz``, on HOST:PORT."""

    def __init__(self, listen: str, registry: CollectorRegistry, *, max_connections: int = 64,
                 request_timeout: float = 10.0, max_request: int = 16384) -> None:
        self.host, self.port = split_hostport(listen)
        self.registry = registry
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.max_request = max_request
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._closed = anyio.Event()
        self._open = 0
        #: connections that have not sent their whole request yet, oldest first: made room of when full
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self._bad = OncePerKey(log, max_keys=256)
        self.scrapes = 0

    @property
    def url(self) -> str | None:
        """``http://HOST:PORT/metrics`` once bound."""
        if self.address is None:
            return None
        host = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        return f"http://{host}:{self.address[1]}/metrics"

    async def start(self) -> tuple[str, int]:
        """Bind and listen (an OSError, such as a port in use, propagates); returns the bound address."""
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host or None, self.port,
                                                      limit=self.max_request, reuse_address=True)
            sock = self._server.sockets[0].getsockname()
            self.address = (str(sock[0]), int(sock[1]))
            log.info("metrics on %s", self.url)
        assert self.address is not None
        return self.address

    async def serve(self, *, task_status: TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`close` or cancelled (starting first if needed), then stop listening."""
        task_status.started(await self.start())
        try:
            await self._closed.wait()
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening (the address is free when this returns) and end :meth:`serve`."""
        self._closed.set()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self._open += 1
        try:
            if self._open > self.max_connections and not self._make_room():
                await self._respond(writer, 503, b"too many connections\n")
                return
            async with asyncio.timeout(self.request_timeout):
                self._waiting[writer] = None
                try:
                    head = await self._read_head(reader)
                finally:
                    self._waiting.pop(writer, None)
                status, body, headers = self._route(head)
                await self._respond(writer, status, body, headers, head_only=head.startswith(b"HEAD "))
        except ValueError as exc:  # not an HTTP/1.x request (line or header): say so, once per peer in the log
            self._bad(host, "metrics: bad request from %s: %s", host, exc)
            with contextlib.suppress(OSError):
                await self._respond(writer, 400, b"bad request\n")
        except _TooLarge as exc:  # answered, then what is left of the request is read away before closing
            what = "request line" if exc.status == 414 else "request header fields"
            self._bad(host, "metrics: bad request from %s: %s over %d bytes", host, what, self.max_request)
            with contextlib.suppress(OSError, TimeoutError):
                await self._respond(writer, exc.status, f"{what} too large\n".encode())
                await _linger(reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            self._bad(host, "metrics: bad request from %s: %s", host, type(exc).__name__)
        except OSError:
            pass  # the peer went away
        finally:
            self._open -= 1
            writer.close()

    def _make_room(self) -> bool:
        """At the connection limit: close the connection that has waited longest without sending its request
        (idle connections never keep a scrape or a health check out); False when every one is being answered."""
        for writer in self._waiting:
            del self._waiting[writer]
            writer.close()
            return True
        return False

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        """The request line and headers, up to the empty line; lines may end in CRLF or LF alone (RFC 9112
        section 2.2 lets a server take a bare LF). A head over ``max_request`` bytes is :class:`_TooLarge`."""
        lines: list[bytes] = []
        size = 0
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:  # one line alone is longer than the whole head may be
                raise _TooLarge(431 if lines else 414) from None
            size += len(line)
            if size > self.max_request:
                raise _TooLarge(431 if lines else 414)
            line = line.rstrip(b"\r\n")
            if not line:
                if lines:
                    return b"\r\n".join(lines) + b"\r\n\r\n"
                continue  # empty lines before a request line are ignored (RFC 9112 section 2.2)
            lines.append(line)

    def _route(self, head: bytes) -> tuple[int, bytes, dict[str, str]]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x request line: {lines[0][:60]!r}")
        method, target, _version = parts
        hdrs: dict[str, str] = {}
        for line in lines[1:-2]:  # the head ends in an empty line
            if line[:1] in (" ", "\t"):  # RFC 9112 section 5.2: a server rejects it (or unfolds it)
                raise ValueError("a header line folded onto the one before (obsolete line folding)")
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.fullmatch(name):  # RFC 9112 section 5.1: no whitespace before the colon
                raise ValueError(f"not a header field: {line[:60]!r}")
            if "\r" in value or "\0" in value:
                raise ValueError(f"a CR or NUL in the value of {name[:60]!r}")
            # several lines of one field are one comma-separated list (RFC 9110 section 5.3)
            name, value = name.lower(), value.strip(" \t")
            hdrs[name] = f"{hdrs[name]}, {value}" if name in hdrs else value
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", {"Allow": "GET, HEAD"}
        if target.lower().startswith(("http://", "https://")):  # the absolute form (RFC 9112 section 3.2.2)
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path = target.split("?", 1)[0]
        if path == "/metrics":
            self.scrapes += 1
            encoder, ctype = negotiate(hdrs.get("accept", ""))
            body = encoder(self.registry)
            # what is served depends on these (RFC 9110 section 12.5.5): a cache must not mix them up
            extra = {"Content-Type": ctype, "Vary": "Accept, Accept-Encoding"}
            if accepts_gzip(hdrs.get("accept-encoding", "")):
                body = gzip.compress(body, compresslevel=1)
                extra["Content-Encoding"] = "gzip"
            return 200, body, extra
        if path == "/healthz":
            return 200, b"ok\n", {}
        if path == "/":
            return 200, _INDEX, {"Content-Type": "text/html; charset=utf-8"}
        return 404, b"not found\n", {}

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                       headers: dict[str, str] | None = None, *, head_only: bool = False) -> None:
        hdrs = {"Content-Type": "text/plain; charset=utf-8", **(headers or {}),
                "Content-Length": str(len(body)), "Connection": "close"}
        out = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        writer.write(out.encode("latin-1") + b"\r\n" + (b"" if head_only else body))
        await writer.drain()


class _TooLarge(Exception):
    """The request's head is over the limit: answered with ``status`` (414 for the request line, else 431)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an answer sent before the whole request was read: end the output, then read the rest away, for a
    bounded time and number of bytes, so that closing does not reset the connection under the answer."""
    if writer.can_write_eof():
        writer.write_eof()
    left = LINGER_BYTES
    async with asyncio.timeout(LINGER):
        while left > 0 and (chunk := await reader.read(min(left, 65536))):
            left -= len(chunk)


async def replace_server(old: MetricsServer | None, listen: str | None,
                         registry: CollectorRegistry) -> tuple[MetricsServer | None, str | None]:
    """A started server at ``listen`` in place of ``old`` (closed), or None for no address: ``(server, None)``.

    If ``listen`` cannot be bound, ``(server, reason)``, where ``server`` serves where ``old`` did: ``old``
    itself, or (when it had to free its port for a retry, as it may hold the same one) a new server started at
    its address. The caller then keeps the running configuration.
    """
    if not listen:
        if old is not None:
            old.close()
        return None, None
    new = MetricsServer(listen, registry)
    try:
        await new.start()
    except OSError as exc:
        if old is None:
            return None, f"metrics.listen: cannot listen on {listen}: {exc.strerror or exc}"
        port = old.address[1] if old.address is not None else old.port  # the port it had (chosen, if 0)
        before = f"[{old.host}]:{port}" if ":" in old.host else f"{old.host}:{port}"
        old.close()
        try:
            await new.start()
        except OSError as again:
            reason = f"metrics.listen: cannot listen on {listen}: {again.strerror or again}"
            back = MetricsServer(before, registry)
            try:
                await back.start()
            except OSError as lost:
                log.error("metrics: cannot listen on %s again either: %s; no metrics until the next reload",
                          before, lost.strerror or lost)
                return None, reason
            return back, reason
    if old is not None:
        old.close()
    return new, None
