"""``[probes.taskstats]`` values that could never select or hold anything are configuration errors naming the key;
an unusable ``cpu_possible`` is said, and a guess registered."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.config import parse
from agent.errors import ConfigError
from agent.netlink.exits import possible_cpus


@pytest.mark.parametrize(("given", "said"), [
    ({"exit_buffer": 10_000_000_000_000}, "exit_buffer must be between 1 and 1048576"),
    ({"exit_buffer": 0}, "exit_buffer must be between 1 and 1048576"),
    ({"commands": [""]}, "commands must hold command names"),
    ({"commands": ["systemd-journald"]}, "at most 15 bytes"),
    ({"cgroups": ["relative/dir"]}, "cgroups must hold absolute paths"),
    ({"cgroupstats": ["cpu"]}, "cgroupstats must hold absolute paths"),
])
def test_values_that_cannot_work_are_refused_naming_the_key(given: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"probes": {"taskstats": given}})
    assert "probes.taskstats" in str(info.value) and said in str(info.value)


def test_names_the_kernel_keeps_are_taken() -> None:
    opts = parse({"probes": {"taskstats": {"commands": ["kworker/0:1", "systemd-journal"],
                                           "exit_buffer": 1 << 20}}}).probe("taskstats").options
    assert opts.commands == ("kworker/0:1", "systemd-journal") and opts.exit_buffer == 1 << 20


@pytest.mark.parametrize("content", [None, "garbage\n"], ids=["missing", "not-a-cpulist"])
def test_an_unusable_cpu_possible_is_warned_of(tmp_path: Path, content: str | None,
                                              caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "possible"
    if content is not None:
        path.write_text(content)
    with caplog.at_level(logging.WARNING):
        mask = possible_cpus(path)
    assert mask.startswith("0-")
    [record] = [r for r in caplog.records if "cpu_possible" in r.getMessage()]
    assert str(path) in record.getMessage() and mask in record.getMessage()


def test_a_cpulist_is_used_without_a_word(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "possible"
    path.write_text("0-1\n")
    with caplog.at_level(logging.WARNING):
        assert possible_cpus(path) == "0-1"
    assert not caplog.records
