"""The pure parts of the watch package: coalescing, inotify records, PSI trigger specs, diffs."""

from __future__ import annotations

import errno
import struct

import pytest

from agent.errors import ParseError
from agent.hostfs.mounts import MountEntry
from agent.watch.cgroups import CgroupWatchOptions
from agent.watch.cgtree import changed
from agent.watch.coalesce import Throttle
from agent.watch.inotify import IN_CREATE, IN_ISDIR, parse_events
from agent.watch.links import LinkState, link_changes
from agent.watch.mounts import change_output, diff_mounts
from agent.watch.psi import PsiTrigger, parse_trigger, refusal


def test_throttle_fires_a_lone_notification_at_once() -> None:
    t = Throttle(0.1)
    assert t.hit("k", 5.0) == 5.0
    assert t.due("k", 5.0) == 1


def test_throttle_folds_a_burst_into_one_firing_at_the_end_of_the_window() -> None:
    t = Throttle(0.1)
    assert t.hit("k", 0.0) == 0.0
    assert t.due("k", 0.0) == 1
    assert t.hit("k", 0.01) == pytest.approx(0.1)
    assert t.hit("k", 0.02) is None and t.hit("k", 0.03) is None
    assert t.due("k", 0.1) == 3
    assert t.hit("other", 0.05) == 0.05  # keys are independent


def test_throttle_bounds_a_flood_and_keeps_the_count() -> None:
    t = Throttle(0.1)
    fires: list[int] = []
    scheduled: float | None = None
    for i in range(10_000):  # 10,000 notifications in one second
        now = i / 10_000
        if scheduled is not None and now >= scheduled:
            fires.append(t.due("k", scheduled))
            scheduled = None
        when = t.hit("k", now)
        if when is not None:
            if when <= now:
                fires.append(t.due("k", now))
            else:
                scheduled = when
    if scheduled is not None:
        fires.append(t.due("k", scheduled))
    assert len(fires) <= 1.0 / 0.1 + 2
    assert sum(fires) == 10_000


def test_throttle_forget_drops_pending_state() -> None:
    t = Throttle(1.0)
    t.hit("k", 0.0)
    t.forget("k")
    assert t.due("k", 1.0) == 0 and len(t) == 0
    with pytest.raises(ValueError):
        Throttle(-1)


def _record(wd: int, mask: int, name: bytes) -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("=iIII", wd, mask, 0, len(padded)) + padded


def test_inotify_records_parse() -> None:
    buf = _record(1, IN_CREATE | IN_ISDIR, b"child") + _record(2, 0x8000, b"")
    a, b = parse_events(buf)
    assert (a.wd, a.name, a.is_dir) == (1, "child", True)
    assert (b.wd, b.name, b.mask) == (2, "", 0x8000)
    with pytest.raises(ParseError):
        parse_events(buf[:-3])
    with pytest.raises(ParseError):
        parse_events(b"\0" * 7)


def test_psi_trigger_specs() -> None:
    t = parse_trigger("cpu some 150000 2000000")
    assert t == PsiTrigger("cpu", "some", 150000, 2000000)
    assert t.line() == b"some 150000 2000000" and t.file == "cpu.pressure"
    for bad in ("cpu some 150000", "gpu some 1 1000000", "cpu most 1 1000000", "cpu some x 1000000",
                "cpu some 150000 100000", "cpu some 0 1000000", "cpu some 2000000 1000000"):
        with pytest.raises(ValueError):
            parse_trigger(bad)
    with pytest.raises(ValueError):
        CgroupWatchOptions(psi_triggers=("memory full 1",))


def test_psi_refusal_explains_the_two_second_rule() -> None:
    odd = parse_trigger("cpu some 150000 1000000")
    assert "multiple of 2 s" in refusal(odd, OSError(errno.EINVAL, "Invalid argument"))
    even = parse_trigger("cpu some 150000 2000000")
    assert "multiple of 2 s" not in refusal(even, OSError(errno.EINVAL, "Invalid argument"))
    assert "without PSI" in refusal(even, OSError(errno.ENOENT, "No such file"))


def test_changed_is_signed_and_only_for_changed_integers() -> None:
    assert changed(None, {"populated": 1}) == {}
    assert changed({"populated": 1, "frozen": 0}, {"populated": 0, "frozen": 0}) == {"populated": -1}
    assert changed({"oom_kill": 2}, {"oom_kill": 5, "new_key": 1}) == {"oom_kill": 3}


def _m(mid: int, target: str, options: str = "rw,relatime") -> MountEntry:
    return MountEntry(source="src", target=target, fstype="tmpfs", options=options, super_options="rw",
                      mount_id=mid)


def test_mount_diff_tells_added_removed_and_remounted() -> None:
    before = [_m(1, "/"), _m(2, "/a"), _m(3, "/b")]
    after = [_m(1, "/"), _m(2, "/a", "ro,relatime"), _m(4, "/b")]  # /b unmounted and mounted again
    changes = diff_mounts(before, after)
    assert [(c.change, c.entry.target, c.entry.mount_id) for c in changes] == [
        ("remounted", "/a", 2), ("added", "/b", 4), ("removed", "/b", 3)]
    out = change_output(changes[0], coalesced=2)
    assert out["readonly"] is True and out["was_readonly"] is False and out["previous_options"] == "rw,relatime"
    assert out["coalesced"] == 2
    assert diff_mounts(before, before) == []


def test_link_transitions() -> None:
    down = LinkState("veth0", up=False, carrier=False, mtu=1500)
    up = LinkState("veth0", up=True, carrier=True, mtu=1500)
    assert link_changes(None, down) == ["created"]
    assert link_changes(down, None) == ["deleted"]
    assert link_changes(down, up) == ["up", "carrier_up"]
    assert link_changes(up, down) == ["down", "carrier_down"]
    assert link_changes(up, LinkState("veth9", up=True, carrier=True, mtu=9000)) == ["renamed", "mtu"]
    assert link_changes(up, up) == []


def test_mount_diff_without_mount_ids_keys_on_source_target_fstype() -> None:
    a = MountEntry(source="srv:/x", target="/mnt/x", fstype="nfs4", options="rw")
    b = MountEntry(source="srv:/x", target="/mnt/x", fstype="nfs4", options="ro")
    assert [c.change for c in diff_mounts([a], [b])] == ["remounted"]
    assert [c.change for c in diff_mounts([a], [])] == ["removed"]
