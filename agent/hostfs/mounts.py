"""Pure parsers for the ``mounts`` probe: mount tables and container identity.

Mount tables come in two formats, both handled by :func:`parse_mount_table`:

* ``/proc/mounts`` and ``/proc/PID/mounts`` (fstab-like:
  ``source target fstype options dump pass``);
* ``/proc/PID/mountinfo`` (proc(5): ids, ``major:minor``, root, mount point,
  per-mount options, optional fields, ``-``, fstype, source, super options),
  parsed by :func:`agent.hostfs.parse.parse_mountinfo`.

Both become :class:`MountEntry`. The rest tells which entries matter
(:func:`fstype_matches`, :func:`is_pseudo`), whether a mount namespace has a
root of its own (:func:`root_mount`, :func:`same_root`), and who runs a
container, from the text of ``/proc/PID/cgroup`` (:func:`hint_from_cgroup`),
the argv of its parent (:func:`hint_from_parent_argv`) and its environment
(:func:`runtime_from_environ`). Nothing here opens a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..errors import ParseError
from .parse import parse_mountinfo, unescape_mount_field

__all__ = [
    "DEFAULT_REMOTE_FSTYPES",
    "PF_KTHREAD",
    "PROXMOX_PREFIX",
    "PSEUDO_FSTYPES",
    "ContainerHint",
    "MountEntry",
    "MountTable",
    "fstype_matches",
    "hint_from_cgroup",
    "hint_from_parent_argv",
    "is_pseudo",
    "parse_mount_table",
    "parse_ns_link",
    "parse_proc_mounts",
    "parse_stat_parent",
    "root_mount",
    "runtime_from_environ",
    "same_root",
]

#: fstype globs of network and host-shared file systems checked by default
DEFAULT_REMOTE_FSTYPES: tuple[str, ...] = (
    "nfs*", "cifs", "smb*", "fuse.sshfs", "ceph", "glusterfs", "9p", "virtiofs",
    # the FUSE clients of the same services (what their mounts are called in the table), and object stores
    "fuse.glusterfs", "fuse.ceph-fuse", "fuse.s3fs", "fuse.rclone",
)

#: file systems without a capacity worth reporting (kernel interfaces, views of other file systems)
PSEUDO_FSTYPES: frozenset[str] = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts", "devtmpfs",
    "efivarfs", "fusectl", "fuse.gvfsd-fuse", "fuse.lxcfs", "fuse.portal", "fuse.snapfuse", "hugetlbfs",
    "mqueue", "nsfs",
    "proc", "pstore", "ramfs", "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs", "tracefs",
})

#: where Proxmox VE mounts the storages it manages
PROXMOX_PREFIX = "/mnt/pve/"

#: ``flags`` bit of /proc/PID/stat that marks a kernel thread
PF_KTHREAD = 0x00200000


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One mount, from either table format (mountinfo-only fields are empty otherwise)."""

    source: str
    target: str
    fstype: str
    #: per-mount options as the kernel wrote them (``rw,nosuid,relatime``)
    options: str
    #: super-block options (mountinfo only)
    super_options: str = ""
    mount_id: int | None = None
    #: ``major:minor`` of the file system (mountinfo only)
    device: str = ""
    #: the directory of the file system mounted here (mountinfo only; ``/`` for a whole file system)
    root: str = ""

    @property
    def readonly(self) -> bool:
        return "ro" in self.options.split(",") or "ro" in self.super_options.split(",")

    @property
    def proxmox_managed(self) -> bool:
        return self.target.startswith(PROXMOX_PREFIX)


@dataclass(frozen=True, slots=True)
class MountTable:
    """The parsed entries of one table, and how many lines were malformed."""

    entries: tuple[MountEntry, ...]
    bad_lines: int = 0


def parse_proc_mounts(text: str) -> MountTable:
    """``/proc/mounts`` text; malformed lines are counted, not fatal."""
    out: list[MountEntry] = []
    bad = 0
    for line in text.split("\n"):  # not splitlines: a path may hold \x1c, \x85 ...
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 6 or not all(parts[1:4]) or not (parts[4].isdigit() and parts[5].isdigit()):
            bad += 1
            continue
        out.append(MountEntry(
            source=unescape_mount_field(parts[0]),
            target=unescape_mount_field(parts[1]),
            fstype=parts[2],
            options=parts[3],
        ))
    return MountTable(tuple(out), bad)


def _looks_like_mountinfo(text: str) -> bool:
    for line in text.split("\n"):
        if line.strip():
            head = line.split(" ", 1)[0]
            return head.isdigit() and " - " in line
    return False


def parse_mount_table(text: str, source: str = "") -> MountTable:
    """Either format, told apart by its first line; malformed lines are counted, not fatal, in both."""
    if not _looks_like_mountinfo(text):
        return parse_proc_mounts(text)
    try:
        infos, bad = parse_mountinfo(text, source=source), 0
    except ParseError:  # some line is malformed: take the others one by one
        infos, bad = [], 0
        for line in text.split("\n"):
            try:
                infos += parse_mountinfo(line, source=source)
            except ParseError:
                bad += 1
    entries = tuple(
        MountEntry(
            source=m.source, target=m.mount_point, fstype=m.fstype, options=m.options,
            super_options=m.super_options, mount_id=m.mount_id, device=m.major_minor, root=m.root,
        )
        for m in infos
    )
    return MountTable(entries, bad)


def fstype_matches(fstype: str, patterns: Iterable[str]) -> bool:
    """Whether ``fstype`` matches one of the shell-style ``patterns`` (case-sensitive)."""
    return any(fnmatchcase(fstype, p) for p in patterns)


def is_pseudo(fstype: str) -> bool:
    return fstype in PSEUDO_FSTYPES


def root_mount(entries: Sequence[MountEntry]) -> MountEntry | None:
    """The entry mounted on ``/`` that is visible (the last one, when mounts are stacked)."""
    for entry in reversed(entries):
        if entry.target == "/":
            return entry
    return None


def same_root(a: MountEntry | None, b: MountEntry | None) -> bool:
    """Whether two root mounts show the same directory of the same file system."""
    if a is None or b is None:
        return a is b
    return (a.device, a.root, a.fstype, a.source) == (b.device, b.root, b.fstype, b.source)


_NS_LINK = re.compile(r"^[a-z_]+:\[(\d+)\]$")


def parse_ns_link(link: str) -> int | None:
    """``mnt:[4026531840]`` (the target of ``/proc/PID/ns/mnt``) -> ``4026531840``."""
    m = _NS_LINK.match(link.strip())
    return int(m.group(1)) if m else None


def parse_stat_parent(text: str) -> tuple[int, int]:
    """``/proc/PID/stat`` -> ``(ppid, flags)``; the command name may hold spaces and parentheses."""
    close = text.rfind(")")
    fields = text[close + 2:].split() if close >= 0 else []
    if len(fields) < 7:
        raise ParseError("/proc/PID/stat: too few fields after the command name")
    try:
        return int(fields[1]), int(fields[6])
    except ValueError:
        raise ParseError("/proc/PID/stat: ppid or flags is not an integer") from None


@dataclass(frozen=True, slots=True)
class ContainerHint:
    """What is known about the container a process runs in."""

    runtime: str | None = None
    id: str | None = None
    name: str | None = None


_HEX_ID = r"([0-9a-f]{12,64})"
# (pattern over one cgroup path, runtime, whether the group is an id or a name)
_CGROUP_RULES: tuple[tuple[re.Pattern[str], str, bool], ...] = (
    (re.compile(rf"docker-{_HEX_ID}\.scope"), "docker", True),
    (re.compile(rf"/docker/{_HEX_ID}(?:/|$)"), "docker", True),
    (re.compile(rf"cri-containerd-{_HEX_ID}\.scope"), "containerd", True),
    (re.compile(rf"crio-{_HEX_ID}\.scope"), "cri-o", True),
    (re.compile(rf"libpod-{_HEX_ID}\.scope"), "podman", True),
    (re.compile(rf"/kubepods[^ ]*/pod[0-9a-f_-]+/{_HEX_ID}(?:/|$)"), "kubernetes", True),
    (re.compile(r"/lxc\.payload[./]([^/]+)"), "lxc", False),
    (re.compile(r"/lxc/([^/]+)"), "lxc", False),
    (re.compile(r"/machine\.slice/machine-([^/]+)\.scope"), "machined", False),
)


def _systemd_unescape(name: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def hint_from_cgroup(text: str) -> ContainerHint | None:
    """The runtime and id or name in ``/proc/PID/cgroup`` text, or ``None``.

    The unified (``0::``) line is tried first, then ``name=systemd``, then the rest.
    """
    paths: list[tuple[int, str]] = []
    for line in text.split("\n"):
        hier, _, rest = line.partition(":")
        controllers, sep, path = rest.partition(":")
        if not sep:
            continue
        rank = 0 if hier == "0" else 1 if controllers == "name=systemd" else 2
        paths.append((rank, path))
    for _rank, path in sorted(paths, key=lambda p: p[0]):
        for pattern, runtime, is_id in _CGROUP_RULES:
            m = pattern.search(path)
            if m is None:
                continue
            value = m.group(1)
            if is_id:
                return ContainerHint(runtime=runtime, id=value)
            return ContainerHint(runtime=runtime, name=_systemd_unescape(value))
    return None


def hint_from_parent_argv(argv: Sequence[str]) -> ContainerHint | None:
    """An LXC container's name from the argv of its parent (``lxc-start -n NAME`` or the monitor)."""
    if not argv:
        return None
    head = argv[0]
    if head.startswith("[lxc monitor]"):
        words = " ".join(argv).split()
        return ContainerHint(runtime="lxc", name=words[-1]) if len(words) > 3 else None
    if head.rsplit("/", 1)[-1] != "lxc-start":
        return None
    for i, arg in enumerate(argv[1:], 1):
        if arg in ("-n", "--name") and i + 1 < len(argv):
            return ContainerHint(runtime="lxc", name=argv[i + 1])
        if arg.startswith("--name="):
            return ContainerHint(runtime="lxc", name=arg.split("=", 1)[1])
        if arg.startswith("-n") and len(arg) > 2:
            return ContainerHint(runtime="lxc", name=arg[2:])
    return ContainerHint(runtime="lxc")


def runtime_from_environ(raw: bytes) -> str | None:
    """The ``container=`` variable of a NUL-separated environment (set by LXC, podman, nspawn)."""
    for item in raw.split(b"\0"):
        if item.startswith(b"container="):
            value = item[len(b"container="):].decode("utf-8", "replace").strip()
            return value or None
    return None
