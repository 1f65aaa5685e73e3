"""The CloudEvents NATS binding, subject templates, URIs and error mapping: pure, no server."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import orjson
import pytest

from agent.codec.nats import (
    CONTENT_TYPE,
    STRUCTURED,
    SubjectTemplate,
    from_binary,
    is_structured,
    pct_decode,
    pct_encode,
    subject_token,
    to_binary,
)
from agent.errors import ConfigError, SinkError, TransportError
from agent.model import Reading
from agent.pipeline import SequenceStore, Stamper
from agent.receiver.nats import NatsSourceSettings
from agent.signing.event import verify_event
from agent.signing.keys import SigningKey
from agent.sinks.base import SinkContext
from agent.sinks.nats import NatsOptions, NatsSink
from agent.transport.nats import nats_errors, parse_nats_uri


def test_percent_encoding_follows_the_binding_example() -> None:
    assert pct_encode("Euro \u20ac \U0001f600") == "Euro%20%E2%82%AC%20%F0%9F%98%80"
    assert pct_encode('say "100%"') == "say%20%22100%25%22"
    assert pct_encode("plain-ASCII_value:/+=") == "plain-ASCII_value:/+="
    assert pct_encode("tab\there") == "tab%09here"


@pytest.mark.parametrize("text", ["Euro \u20ac \U0001f600", 'q"uote', "100%", "", "a b", "\u00e9t\u00e9", "x\x7fy"])
def test_percent_round_trip(text: str) -> None:
    assert pct_decode(pct_encode(text)) == text


def test_percent_decoding_accepts_lower_case_and_quoted_strings() -> None:
    assert pct_decode("%e2%82%ac") == "\u20ac"
    assert pct_decode('"a \\"quoted\\" value"') == 'a "quoted" value'
    assert pct_decode("%41BC") == "ABC"  # needlessly encoded: accepted


def test_percent_decoding_refuses_invalid_utf8() -> None:
    with pytest.raises(ValueError):
        pct_decode("%C0%A0")  # overlong encoding of a space
    with pytest.raises(ValueError):
        pct_decode("%FF")


def _signed_event() -> tuple[dict[str, Any], Any, SigningKey]:
    key = SigningKey.generate()
    stamper = Stamper(key, "host-1", SequenceStore(None))
    event = stamper.stamp(Reading(probe="cgroup", subject="/sys/fs/cgroup/a b", output={"n": 1, "f": 0.5},
                                  inputs=("memory.current",)))
    return orjson.loads(event.body), event, key


def test_binary_mode_round_trip_keeps_the_signature_valid() -> None:
    obj, _event, key = _signed_event()
    headers, payload = to_binary(obj)
    assert "ce-data" not in headers
    assert headers["ce-id"] == obj["id"] and headers["ce-specversion"] == "1.0"
    assert headers["ce-subject"] == "/sys/fs/cgroup/a%20b"
    assert all(v.isascii() and " " not in v for v in headers.values())
    assert orjson.loads(payload) == obj["data"]
    assert not is_structured(headers)
    back = from_binary(headers, payload)
    assert back == obj
    vk = key.verify_key()
    verify_event(back, {vk.keyid: vk})


def test_binary_mode_for_other_data_shapes() -> None:
    base = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    h, p = to_binary({**base, "datacontenttype": "text/plain", "data": "h\u00e9llo"})
    assert p == "h\u00e9llo".encode() and from_binary(h, p)["data"] == "h\u00e9llo"
    h, p = to_binary({**base, "datacontenttype": "application/octet-stream", "data_base64": "AAEC"})
    assert p == b"\x00\x01\x02" and from_binary(h, p)["data_base64"] == "AAEC"
    with pytest.raises(ValueError, match="no exact binary form"):  # b'{}' would come back as JSON data
        to_binary({**base, "data_base64": "e30="})
    h, p = to_binary({**base, "flag": True, "count": 7})
    assert p == b"" and h["ce-flag"] == "true" and h["ce-count"] == "7"
    assert "data" not in from_binary(h, p)
    with pytest.raises(ValueError):
        to_binary({**base, "datacontenttype": "application/xml", "data": {"not": "a string"}})
    with pytest.raises(ValueError, match="payload is not JSON"):  # said to be JSON, and is not
        from_binary({"ce-id": "1", "ce-datacontenttype": "application/json"}, b"{not json")
    # no media type said: JSON when it is, the bytes as they are when not (refused before)
    assert from_binary({"ce-id": "1"}, b'{"a": 1}') == {"id": "1", "data": {"a": 1}}
    assert from_binary({"ce-id": "1"}, b"{not json") == {"id": "1", "data_base64": "e25vdCBqc29u"}
    assert from_binary({"ce-id": "1"}, b"\xff\x00") == {"id": "1", "data_base64": "/wA="}
    assert from_binary({"CE-ID": "x", "Ce-Source": "y", "Nats-Msg-Id": "z"}, b"") == {"id": "x", "source": "y"}


def test_binary_mode_takes_a_plain_content_type_when_no_ce_datacontenttype() -> None:
    base = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}
    got = from_binary({**base, "Content-Type": "application/json"}, b'{"a": 1}')
    assert got["datacontenttype"] == "application/json" and got["data"] == {"a": 1}
    got = from_binary({**base, "content-type": "text/plain; charset=utf-8"}, "h\u00e9".encode())
    assert got["datacontenttype"] == "text/plain; charset=utf-8" and got["data"] == "h\u00e9"
    # the ce- attribute, when present, is the event's: the header does not override it
    got = from_binary({**base, "ce-datacontenttype": "application/octet-stream", "Content-Type": "text/plain"},
                      b"\x00")
    assert got["datacontenttype"] == "application/octet-stream" and got["data_base64"] == "AA=="


def test_mode_detection() -> None:
    assert is_structured(None) and is_structured({})
    assert is_structured({CONTENT_TYPE: STRUCTURED})
    assert is_structured({"content-type": "Application/CloudEvents+JSON; charset=utf-8"})
    assert not is_structured({"Content-Type": "application/json", "ce-id": "1"})
    assert not is_structured({"ce-id": "1"})
    assert is_structured({"Nats-Msg-Id": "1"})
    # no ce- headers: the payload is the event, whatever the Content-Type (docs/nats.md)
    assert is_structured({"Content-Type": "application/json"})
    assert is_structured({"content-type": "text/plain", "X-Other": "1"})


def test_subject_template_renders_safe_tokens() -> None:
    t = SubjectTemplate.parse("hoststamp.{hostid}.{type}")
    assert t.fields == ("hostid", "type")
    assert t.render({"hostid": "web.1", "type": "io.hoststamp.host.v1.cgroup"}) == \
        "hoststamp.web_1.io_hoststamp_host_v1_cgroup"
    assert t.render({}) == "hoststamp._._"
    assert t.wildcard() == "hoststamp.*.*"
    mixed = SubjectTemplate.parse("hs.h-{hostid}.x")
    assert mixed.render({"hostid": "a b*>"}) == "hs.h-a_b__.x" and mixed.wildcard() == "hs.*.x"
    static = SubjectTemplate.parse("events.all")
    assert static.static and static.render({"type": "x"}) == "events.all" == static.wildcard()
    assert subject_token(None) == "_" and subject_token(12) == "12" and subject_token("") == "_"


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a.{Type}", "a.{x", "a.{}"])
def test_subject_template_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        SubjectTemplate.parse(bad)


def test_uri_parsing() -> None:
    ep = parse_nats_uri("nats://127.0.0.1:4333/hoststamp.{hostid}")
    assert ep.server == "nats://127.0.0.1:4333" and ep.subject == "hoststamp.{hostid}"
    ep = parse_nats_uri("nats://u:p@nats.example:5000/x?stream=S", params=("stream",))
    assert ep.server == "nats://u:p@nats.example:5000" and ep.params == {"stream": "S"}
    assert ep.display == "nats://nats.example:5000"
    assert parse_nats_uri("nats://h/x").server == "nats://h:4222"
    for bad in ("nats://h:1/", "nats:h:1/x", "nats://:1/x", "nats://h:99999/x", "nats://h:1/x?zzz=1",
                "nats://h:1/a.x\tb", "nats://h:1/a\n"):
        with pytest.raises(ConfigError):
            parse_nats_uri(bad)
    with pytest.raises(ConfigError, match="query parameter 'stream' given more than once"):  # which would count?
        parse_nats_uri("nats://h:1/g.>?create=1&stream=A&stream=B", params=("stream", "create"))


def test_listener_settings_from_the_uri() -> None:
    s = NatsSourceSettings.from_uri("nats://h:1/guests.>?stream=G&durable=d&create=1&batch=10&ack_wait=2.5")
    assert (s.stream, s.durable, s.create, s.batch, s.ack_wait) == ("G", "d", True, 10, 2.5)
    assert NatsSourceSettings.from_uri("nats://h:1/g").stream == "HOSTSTAMP_IN"
    for bad in ("batch=0", "batch=x", "create=maybe", "ack_wait=-1", "stream=", "other=1", "stream=R.L",
                "stream=a%20b", "durable=a.b", "durable=x*", "durable=a/b"):
        with pytest.raises(ConfigError):
            NatsSourceSettings.from_uri(f"nats://h:1/g?{bad}")
    for bad, said in (("ack_wait=abc", "ack_wait: expected a number, got 'abc'"),
                      ("batch=1.5", "batch: expected a whole number, got '1.5'"),
                      ("create=maybe", "create: expected 1 or 0, got 'maybe'")):
        with pytest.raises(ConfigError, match=re.escape(said)):  # the parameter named, in words
            NatsSourceSettings.from_uri(f"nats://h:1/g?{bad}")
    # what the server refuses only when asked, and the agent then died of: refused by the configuration
    for subject in ("g..x", ">.g", "g.>x", "g.a*", ".g", "g."):
        with pytest.raises(ConfigError, match="subject"):
            NatsSourceSettings.from_uri(f"nats://h:1/{subject}")
    for subject in ("g.*.x", "g.>", ">", "*"):
        assert NatsSourceSettings.from_uri(f"nats://h:1/{subject}").endpoint.subject == subject


def test_sink_refuses_bad_targets_and_options() -> None:
    with pytest.raises(SinkError):
        NatsSink("//h:1/a..b", NatsOptions(), SinkContext())
    with pytest.raises(SinkError):
        NatsSink("//h:1/", NatsOptions(), SinkContext())
    assert NatsSink("//h:1/a.{type}", None, SinkContext()).uri == "nats://h:1/a.{type}"
    for bad in ({"max_inflight": 0}, {"ack_timeout": 0}, {"backoff_initial": 2.0, "backoff_max": 1.0},
                {"create_stream": "A.B"}, {"create_stream": ""}, {"create_stream": "A B"}, {"create_stream": "A*"}):
        with pytest.raises(ValueError):
            NatsOptions(**bad)


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for mod in (nats.errors, nats.js.errors):
        for _name, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found.append(obj)
    return found


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: c.__name__)
def test_every_client_error_becomes_a_transport_error(cls: type[BaseException]) -> None:
    try:
        exc = cls()
    except TypeError:
        exc = cls.__new__(cls)
    with pytest.raises(TransportError) as info, nats_errors("op"):
        raise exc
    assert str(info.value).startswith("op: ") and info.value.__cause__ is exc


def test_os_errors_and_timeouts_are_mapped_too() -> None:
    for exc in (ConnectionRefusedError(111, "refused"), TimeoutError(), EOFError()):
        with pytest.raises(TransportError), nats_errors("op"):
            raise exc


def test_sink_options_come_from_the_config_file_strictly() -> None:
    from agent.config import parse

    cfg = parse({"sinks": [{"uri": "nats://h:1/hs.{hostid}", "mode": "binary", "create_stream": "HS",
                            "max_inflight": 64, "queue_size": 10}]})
    (ep,) = cfg.sinks
    assert (ep.scheme, ep.target) == ("nats", "//h:1/hs.{hostid}")
    assert ep.options == NatsOptions(mode="binary", create_stream="HS", max_inflight=64)
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.bogus"):
        parse({"sinks": [{"uri": "nats://h:1/x", "bogus": 1}]})
    with pytest.raises(ConfigError, match="mode"):
        parse({"sinks": [{"uri": "nats://h:1/x", "mode": "batch"}]})


def test_a_credentials_file_is_checked_with_the_configuration(tmp_path: Path) -> None:
    from tests.nats.creds import make_operator

    with pytest.raises(ValueError, match=r"creds: .*No such file"):
        NatsOptions(creds=str(tmp_path / "absent.creds"))
    with pytest.raises(ValueError, match="creds: empty path"):
        NatsOptions(creds="")
    # a file without both sections would hold the client's reading of it (and the loop) for ever
    (tmp_path / "seed-only.creds").write_text("-----BEGIN USER NKEY SEED-----\nSUAB\n------END USER NKEY SEED------\n")
    with pytest.raises(ValueError, match="no BEGIN NATS USER JWT section"):
        NatsOptions(creds=str(tmp_path / "seed-only.creds"))
    (tmp_path / "empty.creds").write_text("")
    with pytest.raises(ValueError, match="not a NATS credentials file"):
        NatsOptions(creds=str(tmp_path / "empty.creds"))
    (tmp_path / "big.creds").write_bytes(b"x" * (1 << 20))
    with pytest.raises(ValueError, match="more than a key file holds"):
        NatsOptions(creds=str(tmp_path / "big.creds"))
    (tmp_path / "x.creds").write_text("-----BEGIN NATS USER JWT-----\neyJ\n------END NATS USER JWT------\n"
                                      "-----BEGIN USER NKEY SEED-----\nSUAB\n------END USER NKEY SEED------\n")
    with pytest.raises(ValueError, match="does not hold a JWT"):  # said now, not at every retry
        NatsOptions(creds=str(tmp_path / "x.creds"))
    # a real one needs no other package: the agent signs the server's nonce itself
    (tmp_path / "user.creds").write_text(make_operator().creds())
    assert NatsOptions(creds=str(tmp_path / "user.creds")).creds == str(tmp_path / "user.creds")

