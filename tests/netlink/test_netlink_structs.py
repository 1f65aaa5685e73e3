"""struct taskstats (every version) and struct cgroupstats, on captured replies and built buffers."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ParseError
from agent.netlink.codec import NetlinkError, check_error, messages
from agent.netlink.structs import (
    KNOWN_VERSION,
    layout,
    pack_taskstats,
    taskstats_fields,
    unpack_taskstats,
)
from agent.netlink.taskstats import decode_reply, parse_cgroupstats, parse_taskstats
from tests.netlink.fixtures import fixture

# offsets read off include/uapi/linux/taskstats.h by hand (C alignment rules), independent of the decoder
OFFSETS_V16 = {
    "version": (0, "H"), "ac_exitcode": (4, "I"), "ac_nice": (9, "B"), "cpu_count": (16, "Q"),
    "cpu_run_virtual_total": (72, "Q"), "ac_sched": (112, "B"), "ac_uid": (120, "I"), "ac_btime": (136, "I"),
    "ac_etime": (144, "Q"), "ac_majflt": (176, "Q"), "write_syscalls": (240, "Q"), "read_bytes": (248, "Q"),
    "nvcsw": (272, "Q"), "cpu_scaled_run_real_total": (304, "Q"), "freepages_count": (312, "Q"),
    "thrashing_delay_total": (336, "Q"), "ac_btime64": (344, "Q"), "compact_count": (352, "Q"),
    "ac_tgid": (368, "I"), "ac_tgetime": (376, "Q"), "ac_exe_inode": (392, "Q"), "wpcopy_count": (400, "Q"),
    "irq_delay_total": (424, "Q"), "cpu_delay_max": (432, "Q"), "cpu_delay_min": (440, "Q"),
    "irq_delay_min": (552, "Q"),
}
# version 15 put max/min right after each total; version 1 had padding where v2 has ac_exitcode
OFFSETS_V15 = {"cpu_delay_max": (32, "Q"), "blkio_delay_min": (72, "Q"), "cpu_run_real_total": (112, "Q"),
               "irq_delay_min": (552, "Q"), "irq_count": (528, "Q")}
OFFSETS_V1 = {"cpu_count": (8, "Q"), "cpu_run_virtual_total": (64, "Q")}
SIZES = {1: 72, 2: 248, 3: 272, 4: 288, 5: 312, 7: 328, 9: 344, 10: 352, 11: 368, 12: 400, 13: 416, 14: 432,
         15: 560, 16: 560}


@pytest.mark.parametrize(("version", "table"), [(16, OFFSETS_V16), (15, OFFSETS_V15), (1, OFFSETS_V1)])
def test_members_sit_at_the_kernel_offsets(version: int, table: dict[str, tuple[int, str]]) -> None:
    for i, (name, (off, code)) in enumerate(table.items()):
        buf = bytearray(SIZES[version])
        struct.pack_into("=H", buf, 0, version)
        value = 100 + i if name != "version" else version
        struct.pack_into("=" + code, buf, off, value)
        stats = unpack_taskstats(bytes(buf))
        assert stats.get(name) == value, name
        assert stats.note is None


@pytest.mark.parametrize("version", sorted(SIZES))
def test_every_version_roundtrips_at_its_size(version: int) -> None:
    names = taskstats_fields(version)
    values: dict[str, int | str] = {n: (i * 7919 + 1) % 250 for i, n in enumerate(names)}
    values["version"] = version
    if "ac_comm" in values:
        values["ac_comm"] = "worker/3"
    buf = pack_taskstats(values, version)
    assert len(buf) == SIZES[version]
    stats = unpack_taskstats(buf)
    assert stats.version == version
    assert stats.fields == values
    assert stats.note is None


def test_names_are_the_kernels_and_unique() -> None:
    names = taskstats_fields(16)
    assert len(names) == len(set(names)) == 71
    for n in ("version", "ac_exitcode", "ac_pid", "ac_comm", "ac_utime", "ac_stime", "cpu_count",
              "cpu_delay_total", "blkio_delay_total", "swapin_delay_total", "read_bytes", "write_bytes", "nvcsw",
              "nivcsw", "freepages_delay_total", "thrashing_delay_total", "compact_delay_total",
              "wpcopy_delay_total", "irq_delay_total", "irq_delay_max", "cpu_delay_min", "ac_tgid", "ac_exe_inode"):
        assert n in names
    assert [f.name for f in layout(15)] != [f.name for f in layout(16)]
    assert sorted(taskstats_fields(15)) == sorted(taskstats_fields(16))


def test_newer_version_decodes_the_known_prefix_and_says_so() -> None:
    values: dict[str, int | str] = {"ac_pid": 4242, "ac_comm": "x", "irq_delay_min": 5}
    buf = bytearray(pack_taskstats(values, 16)) + b"\xff" * 64
    struct.pack_into("=H", buf, 0, KNOWN_VERSION + 1)
    stats = unpack_taskstats(bytes(buf))
    assert stats.version == 17
    assert stats.get("ac_pid") == 4242 and stats.get("irq_delay_min") == 5
    assert len(stats) == 71
    assert stats.note is not None and "newer" in stats.note and "17" in stats.note


def test_short_payload_decodes_what_fits() -> None:
    buf = pack_taskstats({"ac_pid": 9, "nvcsw": 3, "nivcsw": 4}, 16)[:284]
    stats = unpack_taskstats(buf)
    assert stats.get("ac_pid") == 9
    assert stats.get("nvcsw") == 3  # bytes 272-280
    assert stats.get("nivcsw") is None  # bytes 280-288: past the payload
    assert stats.note is not None and "short" in stats.note
    with pytest.raises(ParseError):
        unpack_taskstats(b"\x10")


def test_command_name_stops_at_nul_and_survives_bad_utf8() -> None:
    buf = bytearray(pack_taskstats({}, 16))
    buf[80:80 + 8] = b"ab\xffc\0zzz"
    assert unpack_taskstats(bytes(buf)).get("ac_comm") == "ab\ufffdc"


def test_captured_pid_reply() -> None:
    data, facts = fixture("taskstats_pid")
    (msg,) = messages(data)
    ((kind, ident, stats),) = parse_taskstats(msg)
    assert (kind, ident) == ("pid", facts["pid"])
    assert stats.version == KNOWN_VERSION and stats.note is None
    f = stats.fields
    assert f["ac_pid"] == facts["pid"] and f["ac_tgid"] == facts["pid"]
    assert f["ac_ppid"] == facts["ppid"]
    assert f["ac_comm"] == facts["comm"]
    assert (f["ac_uid"], f["ac_gid"]) == (facts["uid"], facts["gid"])
    assert f["ac_btime64"] == f["ac_btime"]
    assert isinstance(f["ac_exe_inode"], int) and f["ac_exe_inode"] > 0
    # the fast path of query replies and the general parser agree
    assert decode_reply(data, 0, len(data)) == stats


def test_captured_tgid_reply() -> None:
    data, facts = fixture("taskstats_tgid")
    (msg,) = messages(data)
    ((kind, ident, stats),) = parse_taskstats(msg)
    assert (kind, ident) == ("tgid", facts["tgid"])
    assert stats.version == KNOWN_VERSION


@pytest.mark.parametrize(("name", "code"), [("taskstats_esrch", errno.ESRCH), ("taskstats_eperm", errno.EPERM),
                                            ("cgroupstats_v2_einval", errno.EINVAL)])
def test_captured_errors(name: str, code: int) -> None:
    data, facts = fixture(name)
    (msg,) = messages(data)
    with pytest.raises(NetlinkError) as info:
        check_error(msg)
    assert info.value.errno == code and facts["errno"] in str(info.value)


def test_captured_cgroupstats() -> None:
    data, _ = fixture("cgroupstats_v1")
    (msg,) = messages(data)
    counts = parse_cgroupstats(msg).as_dict()
    assert list(counts) == ["nr_sleeping", "nr_running", "nr_stopped", "nr_uninterruptible", "nr_io_wait"]
    assert all(isinstance(v, int) and 0 <= v < 1 << 22 for v in counts.values())
    assert sum(counts.values()) > 0


def test_captured_exit_of_a_single_task() -> None:
    data, facts = fixture("exit_single")
    (msg,) = messages(data)
    ((kind, ident, stats),) = parse_taskstats(msg)
    assert (kind, ident) == ("pid", facts["pid"])
    f = stats.fields
    assert f["ac_exitcode"] == facts["exit_code"] << 8  # wait status: code in the second byte
    assert (f["ac_comm"], f["ac_ppid"]) == (facts["comm"], facts["ppid"])


def test_captured_exit_that_ended_a_thread_group() -> None:
    data, facts = fixture("exit_thread_group")
    (msg,) = messages(data)
    got = parse_taskstats(msg)
    assert [(k, i) for k, i, _ in got] == [("pid", facts["pid"]), ("tgid", facts["pid"])]
    assert got[0][2].get("ac_exitcode") == facts["exit_code"] << 8
    assert got[1][2].version == KNOWN_VERSION


def test_other_commands_are_parse_errors() -> None:
    data, _ = fixture("cgroupstats_v1")
    (msg,) = messages(data)
    with pytest.raises(ParseError):
        parse_taskstats(msg)
    data, _ = fixture("taskstats_pid")
    (msg,) = messages(data)
    with pytest.raises(ParseError):
        parse_cgroupstats(msg)


@given(st.binary(min_size=0, max_size=700))
def test_arbitrary_payloads_raise_only_parse_errors(blob: bytes) -> None:
    data, _ = fixture("taskstats_pid")
    (msg,) = messages(data)
    try:
        parse_taskstats(msg._replace(payload=msg.payload[:4] + blob))
        decode_reply(data[:20] + blob, 0, 20 + len(blob))
    except ParseError:
        pass


def test_nice_is_signed() -> None:
    buf = bytearray(pack_taskstats({}, 16))
    buf[9] = 246  # task_nice() == -10, stored in a __u8
    assert unpack_taskstats(bytes(buf)).get("ac_nice") == -10
