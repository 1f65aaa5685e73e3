"""The public face of ``agent.netlink``: every exported name exists, errors sit in the one tree."""

from __future__ import annotations

import agent.netlink as netlink
from agent.errors import ParseError, ProbeError


def test_all_names_exist_once() -> None:
    assert len(netlink.__all__) == len(set(netlink.__all__))
    for name in netlink.__all__:
        assert getattr(netlink, name) is not None, name


def test_errors_derive_from_the_agent_tree() -> None:
    assert issubclass(netlink.NetlinkError, ProbeError)
    assert issubclass(netlink.CgroupV2Unsupported, netlink.NetlinkError)
    assert not issubclass(netlink.NetlinkError, ParseError)
