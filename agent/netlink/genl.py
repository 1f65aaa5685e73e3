"""Generic-netlink controller: resolving a family name to its id (sans-IO).

``CTRL_CMD_GETFAMILY`` goes to the fixed controller id ``GENL_ID_CTRL``; the
kernel answers with ``CTRL_CMD_NEWFAMILY`` carrying the family id, version,
header size and highest attribute. With ``NLM_F_DUMP`` it lists every family
as a multipart reply ending in ``NLMSG_DONE``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ParseError
from .codec import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    Message,
    attr_str,
    attr_u16,
    attr_u32,
    attrs_dict,
    build_attr,
    build_genl,
    build_message,
    check_error,
    genl_header,
)

__all__ = [
    "CTRL_CMD_GETFAMILY",
    "CTRL_CMD_NEWFAMILY",
    "GENL_ID_CTRL",
    "Family",
    "build_getfamily",
    "parse_families",
    "parse_family",
]

GENL_ID_CTRL = 0x10
CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_GETFAMILY = 3

CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_HDRSIZE = 4
CTRL_ATTR_MAXATTR = 5


@dataclass(frozen=True, slots=True)
class Family:
    """A generic-netlink family as the controller describes it."""

    id: int
    name: str
    version: int
    hdrsize: int
    maxattr: int


def build_getfamily(seq: int, name: str | None = None) -> bytes:
    """``CTRL_CMD_GETFAMILY`` for ``name``, or a dump of every family when ``name`` is ``None``."""
    if name is None:
        return build_message(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_DUMP, seq, build_genl(CTRL_CMD_GETFAMILY, 1))
    body = build_attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
    return build_message(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, build_genl(CTRL_CMD_GETFAMILY, 1, body))


def parse_family(msg: Message) -> Family:
    """The family in one ``CTRL_CMD_NEWFAMILY`` message."""
    if msg.type != GENL_ID_CTRL:
        raise ParseError(f"expected a controller message (type {GENL_ID_CTRL}), got type {msg.type}")
    cmd, _ = genl_header(msg.payload)
    if cmd != CTRL_CMD_NEWFAMILY:
        raise ParseError(f"expected CTRL_CMD_NEWFAMILY, got command {cmd}")
    a = attrs_dict(msg.payload, 4)
    try:
        return Family(
            id=attr_u16(a[CTRL_ATTR_FAMILY_ID]),
            name=attr_str(a[CTRL_ATTR_FAMILY_NAME]),
            version=attr_u32(a[CTRL_ATTR_VERSION]) if CTRL_ATTR_VERSION in a else 0,
            hdrsize=attr_u32(a[CTRL_ATTR_HDRSIZE]) if CTRL_ATTR_HDRSIZE in a else 0,
            maxattr=attr_u32(a[CTRL_ATTR_MAXATTR]) if CTRL_ATTR_MAXATTR in a else 0,
        )
    except KeyError as exc:
        raise ParseError(f"family description lacks controller attribute {exc.args[0]}") from None


def parse_families(msgs: Iterable[Message]) -> list[Family]:
    """Every family of a reply (single or multipart); acks and ``NLMSG_DONE`` are skipped, errors raised."""
    out: list[Family] = []
    for msg in msgs:
        if msg.type == NLMSG_DONE or check_error(msg, "CTRL_CMD_GETFAMILY"):
            continue
        out.append(parse_family(msg))
    return out
