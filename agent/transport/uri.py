"""Endpoint URIs of the stream transports, parsed without I/O.

* ``unix:PATH`` — a unix stream socket (``unix:@NAME`` for the abstract namespace)
* ``vsock:CID:PORT`` — AF_VSOCK stream; ``vsock:any:PORT`` to listen on every CID
* ``fcvsock:UDS_PATH:PORT`` — Firecracker's hybrid vsock, host side: a listener
  takes guest-initiated connections on ``UDS_PATH_PORT``; a client connects to
  ``UDS_PATH`` and asks for guest ``PORT`` with ``CONNECT PORT\\n``
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError, redact

__all__ = [
    "SCHEMES",
    "VMADDR_CID_ANY",
    "Endpoint",
    "FcVsockEndpoint",
    "UnixEndpoint",
    "VsockEndpoint",
    "parse_endpoint",
    "redact",
    "split_hostport",
]

SCHEMES = ("unix", "vsock", "fcvsock")
VMADDR_CID_ANY = 0xFFFFFFFF
_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class UnixEndpoint:
    path: str

    @property
    def abstract(self) -> bool:
        return self.path.startswith("@")

    @property
    def address(self) -> str:
        """What ``bind``/``connect`` take: abstract names start with a NUL byte."""
        return "\0" + self.path[1:] if self.abstract else self.path

    @property
    def uri(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True, slots=True)
class VsockEndpoint:
    #: ``None`` means any CID (listen only)
    cid: int | None
    port: int

    @property
    def uri(self) -> str:
        return f"vsock:{'any' if self.cid is None else self.cid}:{self.port}"


@dataclass(frozen=True, slots=True)
class FcVsockEndpoint:
    uds: str
    port: int

    @property
    def listen_path(self) -> str:
        """Where Firecracker connects for a guest dialing host port ``port``."""
        return f"{self.uds}_{self.port}"

    @property
    def uri(self) -> str:
        return f"fcvsock:{self.uds}:{self.port}"


Endpoint = UnixEndpoint | VsockEndpoint | FcVsockEndpoint


def _u32(text: str, what: str, uri: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise ConfigError(f"{what} {text!r} is not a decimal number in {uri!r}", key="uri")
    n = int(text)
    if n > _U32_MAX - 1:
        raise ConfigError(f"{what} {n} is out of range in {uri!r}", key="uri")
    return n


#: the most bytes of a unix socket address (``sun_path`` is 108 bytes with its terminating NUL)
MAX_UNIX_PATH = 107


def _fits(path: str, uri: str) -> None:
    """A socket path the kernel can bind or connect to (an abstract name has no terminating NUL)."""
    size = len(path.encode("utf-8", "surrogateescape")) - (1 if path.startswith("@") else 0)
    if size > (MAX_UNIX_PATH + 1 if path.startswith("@") else MAX_UNIX_PATH):
        raise ConfigError(f"socket path {path!r} is {size} bytes, beyond the {MAX_UNIX_PATH} a unix socket "
                          f"address holds: {uri!r}", key="uri")


def parse_endpoint(uri: str, *, listen: bool = False) -> Endpoint:
    """Parse a stream endpoint URI; ``listen`` allows ``vsock:any:PORT``."""
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"not a stream endpoint: {uri!r} (expected unix:, vsock: or fcvsock:)", key="uri")
    if scheme == "unix":
        if not rest or rest == "@" or "\0" in rest:
            raise ConfigError(f"unix: needs a socket path: {uri!r}", key="uri")
        _fits(rest, uri)
        return UnixEndpoint(rest)
    head, sep, port_text = rest.rpartition(":")
    if not sep or not head:
        form = "vsock:CID:PORT" if scheme == "vsock" else "fcvsock:UDS_PATH:PORT"
        raise ConfigError(f"expected {form}, got {uri!r}", key="uri")
    port = _u32(port_text, "port", uri)
    if scheme == "fcvsock":
        if "\0" in head:
            raise ConfigError(f"bad socket path in {uri!r}", key="uri")
        ep = FcVsockEndpoint(head, port)
        _fits(ep.listen_path if listen else head, uri)
        return ep
    if head.lower() == "any":
        if not listen:
            raise ConfigError(f"vsock:any: is for listening; a client needs a CID: {uri!r}", key="uri")
        return VsockEndpoint(None, port)
    return VsockEndpoint(_u32(head, "CID", uri), port)


#: a host name or IPv4 address (empty: every address), and an IPv6 address with an optional zone
_HOST = re.compile(r"[A-Za-z0-9._-]*")
_HOST6 = re.compile(r"[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?")


def split_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``":9464"`` (every address) -> (host, port); ValueError if not."""
    if "://" in text:
        raise ValueError(f"expected HOST:PORT (no scheme, no path), got {text!r}")
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if int(port) > 65535:
        raise ValueError(f"port {int(port)} is out of range (0 to 65535) in {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _HOST6.fullmatch(host):
            raise ValueError(f"not an IPv6 address in [ADDR]:PORT: {text!r}")
    elif ":" in host:
        raise ValueError(f"an IPv6 address needs brackets: [ADDR]:PORT, got {text!r}")
    elif not _HOST.fullmatch(host):
        raise ValueError(f"expected HOST:PORT with HOST a name or an address (no spaces), got {text!r}")
    return host, int(port)
