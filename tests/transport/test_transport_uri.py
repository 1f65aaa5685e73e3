"""Endpoint URIs: what parses, to what, and what is refused with a ConfigError."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.transport import FcVsockEndpoint, UnixEndpoint, VsockEndpoint, parse_endpoint
from agent.transport.uri import MAX_UNIX_PATH


@pytest.mark.parametrize(
    ("uri", "listen", "want"),
    [
        ("unix:/run/hoststamp.sock", False, UnixEndpoint("/run/hoststamp.sock")),
        ("unix:relative/x.sock", False, UnixEndpoint("relative/x.sock")),
        ("UNIX:/a:b", False, UnixEndpoint("/a:b")),
        ("unix:@abstract", False, UnixEndpoint("@abstract")),
        ("vsock:3:5000", False, VsockEndpoint(3, 5000)),
        ("vsock:any:5000", True, VsockEndpoint(None, 5000)),
        ("vsock:ANY:1", True, VsockEndpoint(None, 1)),
        ("vsock:42:4294967294", False, VsockEndpoint(42, 0xFFFFFFFE)),
        ("fcvsock:/srv/vm/v.sock:52", False, FcVsockEndpoint("/srv/vm/v.sock", 52)),
        ("fcvsock:/a:b/v.sock:7", True, FcVsockEndpoint("/a:b/v.sock", 7)),
    ],
)
def test_parses(uri: str, listen: bool, want: object) -> None:
    got = parse_endpoint(uri, listen=listen)
    assert got == want
    assert parse_endpoint(got.uri, listen=listen) == got


@pytest.mark.parametrize(
    "uri",
    [
        "unix:", "unix:@", "tcp:1.2.3.4:5", "vsock:any:5000", "vsock:3", "vsock::5", "vsock:x:5", "vsock:3:-1",
        "vsock:3:4294967295", "vsock:3:٣", "fcvsock:/x", "fcvsock::5", "fcvsock:/x:port", "nounix",
    ],
)
def test_refuses(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_endpoint(uri)
    assert info.value.key == "uri"


def test_abstract_address_and_fc_listen_path() -> None:
    assert UnixEndpoint("@name").address == "\0name"
    assert UnixEndpoint("/p").address == "/p"
    assert FcVsockEndpoint("/srv/v.sock", 52).listen_path == "/srv/v.sock_52"


def test_a_socket_path_longer_than_a_unix_address_holds_is_refused_with_the_uri() -> None:
    """Refused when the configuration is read (exit 2, naming the key), not found by bind or connect later."""
    fits = "/tmp/" + "x" * (MAX_UNIX_PATH - 5)
    assert parse_endpoint(f"unix:{fits}") == UnixEndpoint(fits)
    assert parse_endpoint(f"unix:@{'n' * (MAX_UNIX_PATH)}").path.startswith("@")  # no terminating NUL there
    for uri in (f"unix:{fits}x", f"unix:/tmp/{'é' * 60}"):
        with pytest.raises(ConfigError, match="beyond the 107 a unix socket address holds"):
            parse_endpoint(uri)
    # a Firecracker listener binds UDS_PATH_PORT: that is the path that must fit
    near = "/tmp/" + "y" * (MAX_UNIX_PATH - 7)
    assert parse_endpoint(f"fcvsock:{near}:5000") == FcVsockEndpoint(near, 5000)
    with pytest.raises(ConfigError, match="_5000' is 110 bytes"):
        parse_endpoint(f"fcvsock:{near}:5000", listen=True)
