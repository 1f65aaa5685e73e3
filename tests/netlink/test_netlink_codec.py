"""nlmsghdr / nlattr / genl controller codec, on built bytes and on captured kernel replies."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ParseError
from agent.netlink.codec import (
    NLA_F_NESTED,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    NetlinkError,
    align,
    attr_str,
    attr_u16,
    attr_u32,
    attrs,
    build_attr,
    build_genl,
    build_message,
    check_error,
    error_code,
    genl_header,
    messages,
)
from agent.netlink.genl import GENL_ID_CTRL, build_getfamily, parse_families, parse_family
from tests.netlink.fixtures import fixture


def test_align() -> None:
    assert [align(n) for n in (0, 1, 3, 4, 5, 8)] == [0, 4, 4, 4, 8, 8]


def test_message_roundtrip_pads_to_four() -> None:
    data = build_message(0x1F, 0x5, 77, b"abcde", portid=9)
    assert len(data) == 24  # 16 + 5, padded
    assert struct.unpack_from("=I", data)[0] == 21  # the length excludes the padding
    (msg,) = messages(data)
    assert (msg.type, msg.flags, msg.seq, msg.portid, msg.payload) == (0x1F, 0x5, 77, 9, b"abcde")


def test_several_messages_in_one_datagram() -> None:
    data = build_message(1, 0, 1, b"x") + build_message(2, 0, 2, struct.pack("=i", 0) + bytes(16))
    got = list(messages(data))
    assert [m.seq for m in got] == [1, 2]
    assert check_error(got[1]) is True  # error 0 is an ack
    assert check_error(got[0]) is False


@pytest.mark.parametrize("data", [
    struct.pack("=IHHII", 8, 1, 0, 0, 0),  # length below the header size
    struct.pack("=IHHII", 40, 1, 0, 0, 0),  # length past the datagram
    build_message(1, 0, 1, b"") + b"\x01\x02",  # trailing bytes
])
def test_malformed_messages_raise_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        list(messages(data))


def test_attributes_pad_mask_flags_and_nest() -> None:
    inner = build_attr(1, struct.pack("=I", 42)) + build_attr(2, b"name\0")
    blob = build_attr(3 | NLA_F_NESTED, inner) + build_attr(4, struct.pack("=H", 7))
    got = list(attrs(blob))
    assert [t for t, _ in got] == [3, 4]  # the nested flag is masked off the type
    nested = dict(attrs(got[0][1]))
    assert attr_u32(nested[1]) == 42
    assert attr_str(nested[2]) == "name"
    assert attr_u16(got[1][1]) == 7


def test_attribute_overrunning_its_container_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        list(attrs(struct.pack("=HH", 64, 1) + b"\0" * 8))
    with pytest.raises(ParseError):
        attr_u32(b"\1\2")


@given(st.lists(st.tuples(st.integers(0, 0x3FFF), st.binary(max_size=40)), max_size=8))
def test_attribute_build_parse_roundtrip(items: list[tuple[int, bytes]]) -> None:
    blob = b"".join(build_attr(t, v) for t, v in items)
    assert len(blob) % 4 == 0
    assert list(attrs(blob)) == items


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_parse_error(data: bytes) -> None:
    try:
        for msg in messages(data):
            list(attrs(msg.payload, 4))
    except ParseError:
        pass


def test_genl_header() -> None:
    assert genl_header(build_genl(3, 1, b"")) == (3, 1)
    with pytest.raises(ParseError):
        genl_header(b"\1")


def test_getfamily_request_layout() -> None:
    data = build_getfamily(5, "TASKSTATS")
    (msg,) = messages(data)
    assert msg.type == GENL_ID_CTRL and msg.seq == 5 and msg.flags & 0x1
    assert genl_header(msg.payload) == (3, 1)  # CTRL_CMD_GETFAMILY
    assert [(t, attr_str(v)) for t, v in attrs(msg.payload, 4)] == [(2, "TASKSTATS")]


def test_captured_getfamily_reply() -> None:
    data, facts = fixture("getfamily_taskstats")
    msgs = list(messages(data))
    assert msgs[-1].type == NLMSG_ERROR and error_code(msgs[-1]) == 0  # the ack asked for
    (fam,) = parse_families(msgs)
    assert fam.name == facts["name"]
    assert fam.id == facts["family_id"]
    assert fam.version >= 1


def test_captured_family_dump_is_multipart() -> None:
    data, facts = fixture("getfamily_dump")
    msgs = list(messages(data))
    assert msgs[-1].type == NLMSG_DONE
    assert all(m.flags & NLM_F_MULTI for m in msgs)
    names = {f.name for f in parse_families(msgs)}
    assert set(facts["contains"]) <= names
    assert len(names) == len(msgs) - 1


def test_captured_unknown_family_is_enoent() -> None:
    data, _ = fixture("getfamily_enoent")
    with pytest.raises(NetlinkError) as info:
        parse_families(messages(data))
    assert info.value.errno == errno.ENOENT
    assert "ENOENT" in str(info.value)


def test_parse_family_rejects_other_messages() -> None:
    data, _ = fixture("taskstats_pid")
    (msg,) = messages(data)
    with pytest.raises(ParseError):
        parse_family(msg)


def test_extended_ack_text_is_part_of_the_error() -> None:
    request = struct.pack("=IHHII", 28, 0x1F, 0x1, 5, 0)
    tlv = build_attr(1, b"Unknown attribute\0")
    capped = build_message(NLMSG_ERROR, 0x100 | 0x200, 5, struct.pack("=i", -errno.EINVAL) + request + tlv)
    (msg,) = messages(capped)
    with pytest.raises(NetlinkError) as info:
        check_error(msg, "TASKSTATS_CMD_GET")
    assert info.value.errno == errno.EINVAL
    assert str(info.value) == "TASKSTATS_CMD_GET: Unknown attribute: EINVAL: Invalid argument"
    plain = build_message(NLMSG_ERROR, 0, 5, struct.pack("=i", -errno.EINVAL) + request)
    (msg,) = messages(plain)
    with pytest.raises(NetlinkError) as info:
        check_error(msg)
    assert str(info.value) == "EINVAL: Invalid argument"
