"""Pure parsers of /proc and /sys text, and a ``HostFS(root)`` reader. No asyncio here."""

from .cgroupfs import (
    COUNTER_KEYS,
    LEAF_FILES,
    CgroupDir,
    LeafScan,
    parse_cgroup_file,
    parse_cgroup_leaf,
    read_leaf,
    scan_cgroups,
    walk_cgroups,
)
from .counters import DeltaTracker, nested_deltas
from .lve import LveRow, LveTable, NetAcct, net_acct, parse_lve_list
from .parse import (
    MountInfo,
    find_cgroup2_mount,
    parse_flat_keyed,
    parse_mountinfo,
    parse_psi,
    parse_single_value,
)
from .reader import HostFS, read_small

__all__ = [
    "COUNTER_KEYS",
    "LEAF_FILES",
    "CgroupDir",
    "DeltaTracker",
    "HostFS",
    "LeafScan",
    "LveRow",
    "LveTable",
    "MountInfo",
    "NetAcct",
    "find_cgroup2_mount",
    "nested_deltas",
    "net_acct",
    "parse_cgroup_file",
    "parse_cgroup_leaf",
    "parse_flat_keyed",
    "parse_lve_list",
    "parse_mountinfo",
    "parse_psi",
    "parse_single_value",
    "read_leaf",
    "read_small",
    "scan_cgroups",
    "walk_cgroups",
]
