"""Pure parsers of cgroup v2 and /proc text, against fixture files and the real host."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from agent.errors import ParseError
from agent.hostfs import (
    HostFS,
    find_cgroup2_mount,
    parse_flat_keyed,
    parse_mountinfo,
    parse_psi,
    parse_single_value,
    read_small,
)
from agent.hostfs.parse import unescape_mount_field

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"
HYBRID = HostFS(HOSTS / "hybrid-systemd")
NGINX = "/sys/fs/cgroup/unified/system.slice/nginx.service"


def test_flat_keyed_memory_events_fixture() -> None:
    out = parse_flat_keyed(HYBRID.read_text(f"{NGINX}/memory.events"))
    assert out == {"low": 0, "high": 12, "max": 40, "oom": 2, "oom_kill": 2, "oom_group_kill": 0}


def test_flat_keyed_cpu_stat_keeps_every_key_in_order() -> None:
    out = parse_flat_keyed(HYBRID.read_text(f"{NGINX}/cpu.stat"))
    assert list(out)[:3] == ["usage_usec", "user_usec", "system_usec"]
    assert out["nr_throttled"] == 212 and out["throttled_usec"] == 9811234


def test_flat_keyed_non_numeric_names_file_line_and_key() -> None:
    path = "/sys/fs/cgroup/unified/system.slice/broken.service/memory.events"
    with pytest.raises(ParseError) as info:
        parse_flat_keyed(HYBRID.read_text(path), source=path)
    msg = str(info.value)
    assert f"{path}:5" in msg and "oom_kill" in msg and "lots" in msg


@pytest.mark.parametrize("text", ["a 1 2\n", "lonely\n", "a 1\na 2\n", "a 1.5\n", "a 0x10\n"])
def test_flat_keyed_rejects_malformed(text: str) -> None:
    with pytest.raises(ParseError):
        parse_flat_keyed(text)


@pytest.mark.parametrize("digits", [1001, 5000])
def test_a_counter_of_too_many_digits_is_a_parse_error_naming_file_and_key(digits: int) -> None:
    """Not the ValueError Python's int() raises beyond 4300 digits, which is no reading's error."""
    for parse, text in ((parse_flat_keyed, f"ok 1\nusage_usec {'9' * digits}\n"),
                        (parse_single_value, "9" * digits),
                        (parse_psi, f"some avg10=0.00 avg60=0.00 avg300=0.00 total={'9' * digits}\n")):
        with pytest.raises(ParseError, match=r"x/cpu\.stat:\d: value of \d+ digits"):
            parse(text, source="x/cpu.stat")  # type: ignore[operator]
    assert parse_flat_keyed(f"a {'9' * 1000}\n") == {"a": int("9" * 1000)}


def test_flat_keyed_blank_lines_and_big_values() -> None:
    assert parse_flat_keyed("\nusage_usec 18446744073709551615\n\n") == {"usage_usec": 2**64 - 1}
    assert parse_flat_keyed("") == {}


def test_single_value_number_and_max() -> None:
    assert parse_single_value(HYBRID.read_text(f"{NGINX}/memory.max")) == 536870912
    assert parse_single_value(HYBRID.read_text(f"{NGINX}/memory.current")) == 401604608
    assert parse_single_value("max\n") is None


@pytest.mark.parametrize("text", ["", "12 13\n", "unlimited\n", "-\n"])
def test_single_value_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_single_value(text)


def test_psi_fixture() -> None:
    out = parse_psi(HYBRID.read_text("/sys/fs/cgroup/unified/io.pressure"))
    assert out == {
        "some": {"avg10": 0.45, "avg60": 0.39, "avg300": 0.41, "total": 702211833},
        "full": {"avg10": 0.40, "avg60": 0.35, "avg300": 0.38, "total": 655402118},
    }
    assert isinstance(out["some"]["total"], int) and isinstance(out["some"]["avg10"], float)


def test_psi_takes_a_full_100_percent() -> None:
    assert parse_psi("full avg10=100.00 avg60=99.50 avg300=0.00 total=5\n")["full"]["avg10"] == 100.0


def test_psi_without_full_line() -> None:
    assert parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n") == {
        "some": {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 5}}


@pytest.mark.parametrize("text", [
    "partial avg10=0.00 total=1\n",
    "some avg10=abc total=1\n",
    "some avg10=nan avg60=0 avg300=0 total=1\n",
    "some =1.0 total=1\n",
    "\nsome total=1\nbogus total=2\n",
    "some avg10=0.00 total=1.5\n",
    "some avg10 total=1\n",
    "some avg10=0.00\n",
    "some total=1\nsome total=2\n",
    f"some avg10={'9' * 400}.00 avg60=0.00 avg300=0.00 total=1\n",  # would be inf, then null
    "some avg10=100.01 avg60=0.00 avg300=0.00 total=1\n",
])
def test_psi_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_psi(text)


def test_mountinfo_hybrid_fixture() -> None:
    mounts = HYBRID.mountinfo()
    unified = [m for m in mounts if m.fstype == "cgroup2"]
    assert len(unified) == 1
    m = unified[0]
    assert (m.mount_id, m.parent_id, m.major_minor, m.root) == (32, 31, "0:27", "/")
    assert m.optional == ("shared:10",) and m.super_options == "rw,nsdelegate"
    assert HYBRID.cgroup2_mount() == "/sys/fs/cgroup/unified"
    assert any(m.mount_point == "/mnt/backup disk" for m in mounts)


def test_cgroup2_mount_prefers_sys_fs_cgroup_over_container_bind() -> None:
    assert HostFS(HOSTS / "unified-v2").cgroup2_mount() == "/sys/fs/cgroup"


def test_cgroup2_mount_absent_on_v1_only_host() -> None:
    assert HostFS(HOSTS / "no-cgroup2").cgroup2_mount() is None


def test_cgroup2_mount_falls_back_to_a_sub_root_mount() -> None:
    mounts = parse_mountinfo("7 1 0:26 /lxc/c1 /sys/fs/cgroup2 rw - cgroup2 cgroup2 rw\n")
    assert find_cgroup2_mount(mounts) == "/sys/fs/cgroup2"


def test_mountinfo_rejects_line_without_separator() -> None:
    with pytest.raises(ParseError):
        parse_mountinfo("22 27 0:21 / /proc rw,relatime proc proc rw\n")


def test_unescape_mount_field() -> None:
    assert unescape_mount_field(r"/mnt/a\040b\011c\134d") == "/mnt/a b\tc\\d"
    # an escape stands for a byte of the name: together they are UTF-8, and a byte that is none reads as the
    # raw byte in the table would (its surrogate), not as the code point of its value
    assert unescape_mount_field(r"/mnt/caf\303\251") == "/mnt/caf\u00e9"
    raw = b"/mnt/caf\xe9".decode("utf-8", "surrogateescape")
    assert unescape_mount_field(r"/mnt/caf\351") == "/mnt/caf\udce9" == raw
    assert unescape_mount_field(r"/mnt/x\777") == r"/mnt/x\777"  # no byte: as written


def test_real_host_mountinfo_names_the_unified_mount() -> None:
    assert HostFS("/").cgroup2_mount() == "/sys/fs/cgroup/unified"


def test_real_host_cgroup_files_parse() -> None:
    root = "/sys/fs/cgroup/unified"
    stat = parse_flat_keyed(read_small(f"{root}/cpu.stat").decode())
    assert stat["usage_usec"] > 0
    for kind in ("cpu", "memory", "io"):
        psi = parse_psi(read_small(f"{root}/{kind}.pressure").decode())
        assert "some" in psi and psi["some"]["total"] >= 0


def test_read_small_refuses_a_fifo_a_socket_and_a_device_rather_than_wait_or_read_for_ever(tmp_path: Path) -> None:
    """A FIFO with no writer would block the reading thread (and the probe's round, and the agent's stop) for ever;
    /dev/zero would never end. Run in a child so that a regression fails by its timeout instead of hanging."""
    import os
    import socket
    import subprocess
    import sys

    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    code = (
        "import sys\n"
        "from agent.hostfs.reader import read_small\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        read_small(p)\n"
        "        print(p, 'read')\n"
        "    except OSError as exc:\n"
        "        print(p, exc.errno, exc.strerror)\n"
    )
    paths = [str(tmp_path / "fifo"), str(tmp_path / "sock"), "/dev/zero"]
    try:
        out = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).resolve().parents[2])
    finally:
        sock.close()
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == paths, out.stderr
    fifo, sock_, zero = lines
    for line in (fifo, zero):
        assert line.split()[1] == str(errno.EINVAL) and "not a regular file" in line
    assert sock_.split()[1] == str(errno.ENXIO)  # the kernel's own answer: a socket cannot be opened


def test_read_small_reads_past_the_first_chunk(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 200_000)
    assert len(read_small(str(big))) == 200_000
    assert len(read_small(str(big), limit=200_000)) == 200_000


@pytest.mark.parametrize("size", [1001, 70_000, 200_000])
def test_a_file_longer_than_the_limit_is_an_error_not_a_cut(tmp_path: Path, size: int) -> None:
    import errno

    big = tmp_path / "big"
    big.write_bytes(b"x" * size)
    with pytest.raises(OSError) as exc:
        read_small(str(big), limit=1000)
    assert exc.value.errno == errno.EFBIG and "longer than 1000 bytes" in str(exc.value)
    big.write_bytes(b"x" * 1000)
    assert read_small(str(big), limit=1000) == b"x" * 1000


def test_a_cgroup_file_past_the_limit_is_that_leafs_error(tmp_path: Path) -> None:
    import asyncio

    from agent.probes.cgroup import CgroupOptions, CgroupProbe

    for leaf in ("a", "b"):
        (tmp_path / leaf).mkdir()
        (tmp_path / leaf / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 3\n")
    pad = "x" * (1 << 20)
    (tmp_path / "b" / "memory.events").write_text(f"low 0\n#{pad}\noom_kill 123456789\n")
    got = {r.subject: r for r in asyncio.run(CgroupProbe(CgroupOptions(root=str(tmp_path))).collect())}
    assert got["/a"].error is None and got["/a"].output["memory_events"]["oom_kill"] == 3
    assert got["/b"].error is not None and "longer than" in got["/b"].error


def test_a_large_lve_list_is_read_whole(tmp_path: Path) -> None:
    import asyncio

    from agent.probes.lve import LveOptions, LveProbe

    rows = "".join(f"{1000 + i}\t1\t{i}\t{2 * i}\n" for i in range(100_000))
    path = tmp_path / "list"
    path.write_text("10:LVE\tEP\tNETO\tNETI\n" + rows)
    assert path.stat().st_size > 1 << 20
    (reading,) = [r for r in asyncio.run(LveProbe(LveOptions(path=str(path))).collect()) if r.kind != "lve"]
    out = reading.output
    assert out["net_acct_lves_total"] == 100_000 and out["rows_skipped"] == 0
    assert out["net_acct_total_neto_bytes"] == sum(range(100_000))
    (tmp_path / "empty").write_bytes(b"")
    assert read_small(str(tmp_path / "empty")) == b""


@pytest.mark.parametrize("value", ["1_000", "+5", "-5", "\u0661\u0662", " 5x", "0x10", "5.0"])
def test_counters_are_plain_ascii_decimal(value: str) -> None:
    with pytest.raises(ParseError):
        parse_flat_keyed(f"oom 1\noom_kill {value}\n")
    assert parse_flat_keyed("oom 1\noom_kill 12\n") == {"oom": 1, "oom_kill": 12}
    with pytest.raises(ParseError):
        parse_single_value(value)


@pytest.mark.parametrize("line", ["some avg10=1_0.00 avg60=0.00 avg300=0.00 total=5",
                                  "some avg10=0.00 avg60=0.00 avg300=0.00 total=+5",
                                  "some avg10=1e3 avg60=0.00 avg300=0.00 total=5",
                                  "some avg10=-1.00 avg60=0.00 avg300=0.00 total=5",
                                  "some total=5", "some avg10=0.00 avg10=0.00 avg60=0.00 avg300=0.00 total=5"])
def test_psi_lines_are_as_the_kernel_writes_them(line: str) -> None:
    with pytest.raises(ParseError):
        parse_psi(line + "\n")


def test_psi_fields_a_newer_kernel_may_add_are_left_out() -> None:
    got = parse_psi("some avg10=1.50 avg60=0.25 avg300=0.00 total=77 bogus=3\n")
    assert got == {"some": {"avg10": 1.5, "avg60": 0.25, "avg300": 0.0, "total": 77}}


@pytest.mark.root
def test_a_proc_table_longer_than_a_page_is_read_whole(tmp_path: Path) -> None:
    """mountinfo comes a page or so per read: a short first read is not its end."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from agent.hostfs.reader import read_small;"
        "whole = open('/proc/self/mountinfo', 'rb').read();"
        "got = read_small('/proc/self/mountinfo', 16 << 20);"
        "print(len(whole), len(got), got == whole)"
    )
    mounts = " && ".join(f"mkdir -p {tmp_path}/m{i} && mount -t tmpfs hs-test-{i} {tmp_path}/m{i}" for i in range(80))
    root = str(Path(__file__).resolve().parents[2])
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f"{mounts} && {sys.executable} -c \"{script}\" {root}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    whole, _got, same = res.stdout.split()
    assert int(whole) > 8192 and same == "True", res.stdout
