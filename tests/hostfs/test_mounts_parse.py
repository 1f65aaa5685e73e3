"""Pure parsers of the ``mounts`` probe: both mount table formats, fstype globs, roots, container hints."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ParseError
from agent.hostfs.mounts import (
    DEFAULT_REMOTE_FSTYPES,
    PF_KTHREAD,
    ContainerHint,
    MountEntry,
    fstype_matches,
    hint_from_cgroup,
    hint_from_parent_argv,
    is_pseudo,
    parse_mount_table,
    parse_ns_link,
    parse_proc_mounts,
    parse_stat_parent,
    root_mount,
    runtime_from_environ,
    same_root,
)
from agent.hostfs.parse import parse_mountinfo

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"
PVE = HOSTS / "mounts-pve" / "proc" / "mounts"
CT = HOSTS / "mounts-containers" / "proc"
DOCKER_ID = "3f4e8c1d2b6a79e0f1c2d3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f3a2b1c"


def test_proc_mounts_fixture() -> None:
    table = parse_proc_mounts(PVE.read_text())
    assert table.bad_lines == 1
    by = {e.target: e for e in table.entries}
    assert len(by) == 7
    backup = by["/mnt/pve/backup"]
    assert (backup.source, backup.fstype) == ("10.0.0.5:/export/backup", "nfs4")
    assert backup.options.startswith("rw,relatime,vers=4.2,")
    assert backup.proxmox_managed and not backup.readonly
    assert by["/srv/share"].readonly and not by["/srv/share"].proxmox_managed
    assert by["/mnt/pve/iso store"].fstype == "nfs"  # \040 decoded
    assert backup.mount_id is None and backup.device == ""


def test_escapes_in_every_field() -> None:
    line = "host:/a\\040b /mnt/x\\011y\\012z\\134 nfs ro 0 0\n"
    [e] = parse_proc_mounts(line).entries
    assert e.source == "host:/a b"
    assert e.target == "/mnt/x\ty\nz\\"
    assert e.readonly


def test_mountinfo_is_told_apart_and_keeps_its_extra_fields() -> None:
    table = parse_mount_table((CT / "400" / "mountinfo").read_text(), source="400/mountinfo")
    by = {e.target: e for e in table.entries}
    data = by["/data"]
    assert (data.mount_id, data.device, data.root) == (807, "253:1", "/volumes/appdata/_data")
    assert (data.source, data.fstype, data.options) == ("/dev/mapper/vg-docker", "ext4", "rw,relatime")
    # ro in the per-mount options, rw in the super-block: read-only all the same
    assert by["/sys"].readonly
    assert by["/mnt/nfs"].super_options.startswith("rw,vers=4.2")
    assert root_mount(table.entries) == by["/"]


def test_super_options_alone_make_a_mount_readonly() -> None:
    [e] = parse_mount_table("40 1 0:50 / /srv rw,relatime - nfs4 h:/x ro,vers=4.2\n").entries
    assert e.readonly


def test_bad_mountinfo_lines_are_counted_and_the_others_kept() -> None:
    table = parse_mount_table("40 1 0:50 / /srv rw - \n41 x 0:50 / /a rw - nfs h:/ rw\ngarbage\n"
                              "42 1 0:51 / /b rw - nfs4 h:/b rw\n")
    assert [e.target for e in table.entries] == ["/b"] and table.bad_lines == 3
    with pytest.raises(ParseError):  # the strict parser underneath still names the line
        parse_mountinfo("40 1 0:50 / /srv rw - \n", source="t")


def test_empty_table() -> None:
    assert parse_mount_table("").entries == ()
    assert parse_mount_table("\n\n").bad_lines == 0


@pytest.mark.parametrize(("fstype", "remote"), [
    ("nfs", True), ("nfs4", True), ("cifs", True), ("smb3", True), ("smbfs", True), ("fuse.sshfs", True),
    ("ceph", True), ("glusterfs", True), ("9p", True), ("virtiofs", True),
    ("fuse.glusterfs", True), ("fuse.ceph-fuse", True), ("fuse.gvfsd-fuse", False), ("ext4", False),
    ("fuse", False), ("NFS", False), ("tmpfs", False),
])
def test_default_remote_families(fstype: str, remote: bool) -> None:
    assert fstype_matches(fstype, DEFAULT_REMOTE_FSTYPES) is remote


def test_pseudo_file_systems() -> None:
    assert all(is_pseudo(t) for t in ("proc", "sysfs", "cgroup2", "devpts", "fuse.lxcfs", "squashfs"))
    assert not any(is_pseudo(t) for t in ("ext4", "xfs", "overlay", "tmpfs", "zfs", "nfs4", "fuse.sshfs"))


def test_same_root() -> None:
    a = MountEntry("/dev/vda", "/", "ext4", "rw", device="254:0", root="/")
    assert same_root(a, MountEntry("/dev/vda", "/", "ext4", "ro", device="254:0", root="/"))
    assert not same_root(a, MountEntry("/dev/vda", "/", "ext4", "rw", device="254:0", root="/var/lib/ct"))
    assert not same_root(a, None)
    assert same_root(None, None)


def test_ns_link_and_stat() -> None:
    assert parse_ns_link("mnt:[4026531840]") == 4026531840
    assert parse_ns_link("garbage") is None
    assert parse_stat_parent((CT / "401" / "stat").read_text()) == (400, 4194560)  # ") (" in the name
    ppid, flags = parse_stat_parent((CT / "25" / "stat").read_text())
    assert ppid == 2 and flags & PF_KTHREAD
    with pytest.raises(ParseError):
        parse_stat_parent("12 (x) S 1")


@pytest.mark.parametrize(("text", "hint"), [
    (f"0::/system.slice/docker-{DOCKER_ID}.scope\n", ContainerHint("docker", DOCKER_ID)),
    (f"12:memory:/docker/{DOCKER_ID}\n1:name=systemd:/docker/{DOCKER_ID}\n", ContainerHint("docker", DOCKER_ID)),
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{DOCKER_ID}"
     ".scope\n", ContainerHint("containerd", DOCKER_ID)),
    (f"0::/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/{DOCKER_ID}\n",
     ContainerHint("kubernetes", DOCKER_ID)),
    (f"0::/machine.slice/libpod-{DOCKER_ID}.scope/container\n", ContainerHint("podman", DOCKER_ID)),
    (f"0::/kubepods.slice/crio-{DOCKER_ID}.scope\n", ContainerHint("cri-o", DOCKER_ID)),
    ("0::/lxc.payload.web01\n", ContainerHint("lxc", name="web01")),
    ("0::/lxc/101/ns/init.scope\n", ContainerHint("lxc", name="101")),  # Proxmox VE
    ("0::/machine.slice/machine-build\\x2dbox.scope/payload\n", ContainerHint("machined", name="build-box")),
    ("0::/system.slice/chronyd.service\n", None),
    ("0::/\n", None),
    ("", None),
])
def test_hint_from_cgroup(text: str, hint: ContainerHint | None) -> None:
    assert hint_from_cgroup(text) == hint


def test_unified_line_wins_over_v1_lines() -> None:
    text = f"4:memory:/docker/{DOCKER_ID}\n0::/lxc.payload.mine\n"
    assert hint_from_cgroup(text) == ContainerHint("lxc", name="mine")


@pytest.mark.parametrize(("argv", "hint"), [
    (["[lxc monitor] /var/lib/lxc 101"], ContainerHint("lxc", name="101")),
    (["[lxc monitor]", "/var/lib/lxc", "web"], ContainerHint("lxc", name="web")),
    (["/usr/bin/lxc-start", "-F", "-n", "c1"], ContainerHint("lxc", name="c1")),
    (["lxc-start", "--name=c2"], ContainerHint("lxc", name="c2")),
    (["lxc-start", "-nc3"], ContainerHint("lxc", name="c3")),
    (["lxc-start"], ContainerHint("lxc")),
    (["containerd-shim-runc-v2", "-namespace", "moby"], None),
    ([], None),
])
def test_hint_from_parent_argv(argv: list[str], hint: ContainerHint | None) -> None:
    assert hint_from_parent_argv(argv) == hint


def test_runtime_from_environ() -> None:
    assert runtime_from_environ((CT / "500" / "environ").read_bytes()) == "lxc"
    assert runtime_from_environ(b"PATH=/bin\0container=podman\0") == "podman"
    assert runtime_from_environ(b"PATH=/bin\0") is None
    assert runtime_from_environ(b"container=\0") is None


def test_a_mount_path_holding_other_line_breaks_is_one_line() -> None:
    text = "40 1 0:50 / /srv/a\x1cb rw - tmpfs none rw\n41 1 0:51 / /srv/c\x85d rw - tmpfs none rw\n"
    table = parse_mount_table(text)
    assert [e.target for e in table.entries] == ["/srv/a\x1cb", "/srv/c\x85d"] and table.bad_lines == 0
    plain = parse_mount_table("none /srv/a\u2028b tmpfs rw 0 0\n")
    assert [e.target for e in plain.entries] == ["/srv/a\u2028b"] and plain.bad_lines == 0
