"""The CloudEvents NATS protocol binding and subject templates; pure, no sockets.

Structured mode: the payload is the JSON event format (our ``Event.body``) and
the ``Content-Type`` header is ``application/cloudevents+json``. Binary mode:
the payload is the event's data and every other attribute is a ``ce-NAME``
header whose value is percent-encoded (space, double quote, percent and
everything outside printable ASCII), as the binding requires. A receiver tells
the modes apart by the ``Content-Type`` header: ``application/cloudevents...``
means structured, anything else binary.

A :class:`SubjectTemplate` such as ``hoststamp.{hostid}.{type}`` renders a
publish subject from event attributes; each value becomes one subject-safe
token (``io.hoststamp.host.v1.cgroup`` -> ``io_hoststamp_host_v1_cgroup``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import orjson

from .exact import loads_exact

__all__ = [
    "CE_PREFIX",
    "CONTENT_TYPE",
    "MSG_ID",
    "STRUCTURED",
    "SubjectTemplate",
    "from_binary",
    "is_structured",
    "pct_decode",
    "pct_encode",
    "subject_token",
    "to_binary",
]

CE_PREFIX = "ce-"
CONTENT_TYPE = "Content-Type"
MSG_ID = "Nats-Msg-Id"
#: the first line of a message's header block, and what ends each header line and the block
_HDR_LINE = b"NATS/1.0\r\n"


def msg_id(text: str) -> str:
    """The ``Nats-Msg-Id`` value for the id (or source and id) ``text``: itself, unless a header would change it
    (white space at either end is trimmed, a line break becomes a space): then percent-encoded, as is any text
    with a ``%``, so that two different ids never share a value (and JetStream never drops one as the other's
    duplicate)."""
    if text == text.strip() and text.isprintable() and "%" not in text:
        return text
    return quote(text, safe="")


def source_msg_id(source: str, ident: str) -> str:
    """The ``Nats-Msg-Id`` of ``msg_id = "source-id"``: ``source``, a space and ``id``, each percent-encoded
    when it holds a space or a ``%`` (or anything :func:`msg_id` encodes), so that the one space between them
    is where they part: two different (source, id) pairs never share a value (``"a b"`` and ``"c"`` against
    ``"a"`` and ``"b c"``)."""
    return msg_id(f"{_own_part(source)} {_own_part(ident)}")


def _own_part(text: str) -> str:
    return text if " " not in text and msg_id(text) == text else quote(text, safe="")


def wire_size(headers: Mapping[str, str], payload: bytes) -> int:
    """Bytes of a message as the server counts them against ``max_payload``: the header block the client
    writes (names and values trimmed, a line break in a value made a space) and the payload."""
    size = len(_HDR_LINE) + 2
    for name, value in headers.items():
        if key := name.strip():
            size += len(key.encode()) + 2 + len(value.strip().encode()) + 2
    return size + len(payload)
STRUCTURED = "application/cloudevents+json"

_SAFE = frozenset(range(0x21, 0x7F)) - {0x22, 0x25}
_DATA_ATTRS = ("data", "data_base64")


def pct_encode(text: str) -> str:
    """Percent-encode a header value as the binding requires (upper-case hex)."""
    raw = text.encode("utf-8")
    if all(b in _SAFE for b in raw):
        return text
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)


def _unquote(value: str) -> str:
    """Undo an RFC 7230 quoted-string (older senders may use one)."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    out: list[str] = []
    it = iter(value[1:-1])
    for ch in it:
        out.append(next(it, "") if ch == "\\" else ch)
    return "".join(out)


def pct_decode(value: str) -> str:
    """One round of percent-decoding; byte sequences that are not UTF-8 raise ValueError."""
    value = _unquote(value.strip())
    if "%" not in value:
        return value
    return unquote_to_bytes(value).decode("utf-8")  # strict: overlong or broken sequences raise


def _is_json(content_type: object) -> bool:
    if content_type is None:
        return True
    if not isinstance(content_type, str):
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def is_structured(headers: Mapping[str, str] | None) -> bool:
    """True when the message carries a whole event in its payload."""
    if not headers:
        return True  # no headers at all: only structured mode is possible
    if not any(name.lower().startswith(CE_PREFIX) for name in headers):
        return True  # no ce- attribute headers: the payload is the event, whatever its Content-Type says
    for name, value in headers.items():
        if name.lower() == "content-type":
            return value.strip().lower().startswith("application/cloudevents")
    return False


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return pct_encode(value)
    raise ValueError(f"attribute value of type {type(value).__name__} has no header form")


def to_binary(event: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
    """An event dict -> (``ce-`` headers, payload) in binary mode."""
    headers = {CE_PREFIX + name: _header_value(v) for name, v in event.items() if name not in _DATA_ATTRS}
    if "data_base64" in event:
        if _is_json(event.get("datacontenttype")):
            # a receiver takes a payload with no media type (or a JSON one) that parses as JSON for JSON data:
            # these bytes would not come back as they were
            raise ValueError("data_base64 without a non-JSON datacontenttype has no exact binary form")
        try:
            payload = base64.b64decode(event["data_base64"], validate=True)
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"data_base64 is not base64: {exc}") from None
    elif "data" not in event:
        payload = b""
    elif _is_json(event.get("datacontenttype")):
        payload = orjson.dumps(event["data"])
    elif isinstance(event["data"], str):
        payload = event["data"].encode("utf-8")
    else:
        raise ValueError("data of a non-JSON content type must be a string")
    return headers, payload


def from_binary(headers: Mapping[str, str], payload: bytes) -> dict[str, Any]:
    """``ce-`` headers and payload -> an event dict; ValueError when a value does not decode.

    The data's media type is ``ce-datacontenttype``; a message without one that has a plain ``Content-Type``
    header (as the HTTP and Kafka bindings carry it in binary mode) takes that instead. Without either, a
    payload that is JSON is the data, and any other is carried as ``data_base64``.
    """
    event: dict[str, Any] = {}
    content_type: str | None = None
    for name, value in headers.items():
        low = name.lower()
        if low.startswith(CE_PREFIX) and len(low) > len(CE_PREFIX):
            event[low[len(CE_PREFIX) :]] = pct_decode(value)
        elif low == "content-type" and value.strip():
            content_type = value.strip()
    if content_type is not None and "datacontenttype" not in event:
        event["datacontenttype"] = content_type
    if payload:
        ctype = event.get("datacontenttype")
        if _is_json(ctype):
            try:
                event["data"] = loads_exact(payload)
            except orjson.JSONDecodeError as exc:
                if ctype is not None:
                    raise ValueError(f"payload is not JSON: {str(exc)[:80]}") from None
                # no media type said: JSON if it is, else the bytes as they are
                event["data_base64"] = base64.b64encode(payload).decode("ascii")
        elif isinstance(ctype, str) and ctype.lower().startswith("text/"):
            event["data"] = payload.decode("utf-8")
        else:
            event["data_base64"] = base64.b64encode(payload).decode("ascii")
    return event


_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_FIELD = re.compile(r"\{([a-z0-9]{1,64})\}")
_LITERAL_BAD = re.compile(r"[\s*>{}]")


def subject_token(value: object) -> str:
    """Any attribute value as one subject token: dots, spaces, wildcards and the like become ``_``."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return _TOKEN_UNSAFE.sub("_", text[:200]) or "_"


@dataclass(frozen=True, slots=True)
class SubjectTemplate:
    """``prefix.{attr}.{attr}``: literal text and ``{attribute}`` placeholders."""

    text: str
    #: alternating literal text and attribute names: ``("hoststamp.", "hostid", ".", "type", "")``
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> SubjectTemplate:
        """ValueError names what is wrong with a template."""
        if not text:
            raise ValueError("the subject is empty")
        parts = tuple(_FIELD.split(text))
        for literal in parts[0::2]:
            if _LITERAL_BAD.search(literal):
                raise ValueError(f"subject {text!r}: whitespace, wildcards and stray braces are not allowed "
                                 "(placeholders are {lowercase-attribute})")
        probe = "".join(p if i % 2 == 0 else "x" for i, p in enumerate(parts))
        if any(not token for token in probe.split(".")):
            raise ValueError(f"subject {text!r} has an empty token")
        return cls(text, parts)

    @property
    def fields(self) -> tuple[str, ...]:
        return self.parts[1::2]

    @property
    def static(self) -> bool:
        return len(self.parts) == 1

    def render(self, attributes: Mapping[str, Any]) -> str:
        if self.static:
            return self.text
        return "".join(p if i % 2 == 0 else subject_token(attributes.get(p)) for i, p in enumerate(self.parts))

    def wildcard(self) -> str:
        """The filter matching every subject this renders: each token with a placeholder becomes ``*``."""
        if self.static:
            return self.text
        marked = "".join(p if i % 2 == 0 else "\0" for i, p in enumerate(self.parts))
        return ".".join("*" if "\0" in token else token for token in marked.split("."))
