"""The command line's argument types: what each takes, and the reason it gives for what it refuses (the parser
prefixes it with the option's name)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from agent.argtypes import leaf_index, probe_list, seconds, send_target


def test_what_they_take() -> None:
    assert probe_list("cgroup, mounts,") == ["cgroup", "mounts"] and probe_list("NONE") == []
    assert seconds("0.5") == 0.5 and leaf_index("7") == 7
    for uri in ("unix:/run/x.sock", "unix:@name", "vsock:3:5000", "fcvsock:/srv/v.sock:52"):
        assert send_target(uri) == uri


@pytest.mark.parametrize(("arg_type", "text", "reason"), [
    (probe_list, " , ", "no probe named"),
    (seconds, "0", "expected seconds"),
    (leaf_index, "-1", "expected a leaf index"),
    (send_target, "tcp:1.2.3.4:5", "not a stream endpoint: 'tcp:1.2.3.4:5'"),
    (send_target, "vsock:any:5", "vsock:any: is for listening"),
])
def test_what_they_refuse_and_why(arg_type: Callable[[str], object], text: str, reason: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        arg_type(text)
    assert str(info.value).startswith(reason)  # the reason alone: no configuration key in front of it
