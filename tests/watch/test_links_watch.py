"""Link change events against the kernel: a veth pair in a network namespace made here."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import anyio
import pytest

from agent.probes.link import LinkOptions, LinkProbe, link_output
from agent.watch.links import LinkWatcher, LinkWatchOptions, watch_links

from .conftest import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.root]


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    name = f"hs-watch-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)


def change(subject: str, kind: str):  # type: ignore[no-untyped-def]
    return lambda r: r.subject == subject and r.output.get("change") == kind


async def test_create_up_carrier_down_delete(netns: str, collector: Collector) -> None:
    probe = LinkProbe(LinkOptions(netns=netns))
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(lambda: watch_links(collector, LinkWatchOptions(), link_output, probe._wanted, netns=netns,
                                          ready=lambda w: ready.set()))
        with anyio.fail_after(5):
            await ready.wait()
        ip(netns, "link", "add", "veth-wa", "type", "veth", "peer", "name", "veth-wb")
        created = await collector.wait_for(change("veth-wa", "created"))
        assert created.output["kind"] == "veth" and created.output["carrier"] is False
        assert created.type == "io.hoststamp.host.v1.link.change" and created.probe_source == f"rtnetlink:{netns}"
        ip(netns, "link", "set", "veth-wa", "up")
        up = await collector.wait_for(change("veth-wa", "up"))
        assert "UP" in up.output["flags"]
        ip(netns, "link", "set", "veth-wb", "up")  # the peer brings the carrier
        await collector.wait_for(change("veth-wa", "carrier_up"))
        ip(netns, "link", "set", "veth-wb", "down")
        await collector.wait_for(change("veth-wa", "carrier_down"))
        await collector.wait_for(change("veth-wb", "down"))
        ip(netns, "link", "del", "veth-wa")
        gone = await collector.wait_for(change("veth-wa", "deleted"))
        assert gone.output["ifindex"] == created.output["ifindex"]
        await collector.wait_for(change("veth-wb", "deleted"))
        tg.cancel_scope.cancel()
    assert not any(r.subject == "lo" for r in collector.readings)  # not in the probe's include globs


async def test_flapping_link_is_merged_with_a_count(netns: str, collector: Collector) -> None:
    ip(netns, "link", "add", "veth-fa", "type", "veth", "peer", "name", "veth-fb")
    ip(netns, "link", "set", "veth-fa", "up")
    box: list[LinkWatcher] = []

    def on_ready(w: LinkWatcher) -> None:
        box.append(w)
        ready.set()

    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(lambda: watch_links(collector, LinkWatchOptions(coalesce=0.5), link_output, lambda n: True,
                                          netns=netns, ready=on_ready))
        with anyio.fail_after(5):
            await ready.wait()
        batch = "".join(f"link set veth-fb {'up' if i % 2 == 0 else 'down'}\n" for i in range(40))
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch.encode(), check=True, timeout=10)
        await collector.wait_for(lambda r: r.subject == "veth-fb" and r.output.get("coalesced", 0) > 0)
        flaps = [r for r in collector.readings if r.subject == "veth-fb"]
        # what an overrun (ENOBUFS) leads to: a fresh dump, compared with the known state, and one error reading
        ip(netns, "link", "del", "veth-fa")
        box[0]._resync()
        r = await collector.wait_for(lambda r: r.output.get("change") == "overrun")
        assert r.error and "ENOBUFS" in r.error
        await collector.wait_for(lambda r: r.subject == "veth-fa" and r.output.get("change") == "deleted")
        tg.cancel_scope.cancel()
    assert len(flaps) <= 3  # the first at once, then at most one per half-second window
    assert set(flaps[-1].output["changes"]) >= {"up", "down"}
    assert flaps[-1].output["change"] in ("down", "flapped")  # 40 toggles end down, where the first one began


@pytest.mark.parametrize("overrun", [False, True], ids=["notified", "after-an-overrun"])
async def test_a_re_created_link_is_told_deleted_before_created_again(netns: str, collector: Collector,
                                                                      overrun: bool) -> None:
    """The old link's deletion falls in its coalescing window (it was created just before), the new link's
    creation does not (a new ifindex): the deletion is still told first, as the kernel ordered them; also when
    the two are found by the dump after an overrun (ENOBUFS)."""
    box: list[LinkWatcher] = []
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()

        def on_ready(w: LinkWatcher) -> None:
            box.append(w)
            ready.set()

        tg.start_soon(lambda: watch_links(collector, LinkWatchOptions(coalesce=5.0), link_output, lambda n: True,
                                          netns=netns, ready=on_ready))
        with anyio.fail_after(5):
            await ready.wait()
        ip(netns, "link", "add", "veth-re", "type", "veth", "peer", "name", "veth-rp")
        first = await collector.wait_for(change("veth-re", "created"))
        batch = "link del veth-re\nlink add veth-re type veth peer name veth-rp\n"
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch.encode(), check=True, timeout=10)
        if overrun:
            box[0]._resync()  # as after ENOBUFS, before the loop reads the notifications queued meanwhile
        with anyio.fail_after(15):  # the order is what counts: a deletion held back comes after its window
            while sum(1 for r in collector.readings if r.subject == "veth-re") < 3:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    told = [(r.output["change"], r.output["ifindex"]) for r in collector.readings if r.subject == "veth-re"]
    assert told[:2] == [("created", first.output["ifindex"]), ("deleted", first.output["ifindex"])]
    assert told[2][0] == "created" and told[2][1] != first.output["ifindex"]


async def test_probe_watch_in_a_missing_namespace_is_one_error(collector: Collector) -> None:
    probe = LinkProbe(LinkOptions(netns="hs-no-such-namespace"))
    with anyio.fail_after(5):
        await probe.watch(collector)
    assert len(collector.readings) == 1 and "not started" in (collector.readings[0].error or "")


async def test_a_rename_out_of_include_is_told_under_the_new_name_with_the_old(netns: str,
                                                                              collector: Collector) -> None:
    ip(netns, "link", "add", "veth-ra", "type", "veth", "peer", "name", "veth-rb")

    def wanted(name: str) -> bool:
        return name.startswith("veth-r")

    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(lambda: watch_links(collector, LinkWatchOptions(coalesce=0.0), link_output, wanted,
                                          netns=netns, ready=lambda w: ready.set()))
        with anyio.fail_after(5):
            await ready.wait()
        ip(netns, "link", "set", "veth-ra", "name", "other0")  # out of what is wanted
        out = await collector.wait_for(change("other0", "renamed"))
        assert out.output["renamed_from"] == "veth-ra"
        ip(netns, "link", "set", "other0", "mtu", "1400")  # not wanted now: not told
        ip(netns, "link", "set", "other0", "name", "veth-rc")  # back in
        back = await collector.wait_for(change("veth-rc", "renamed"))
        assert back.output["renamed_from"] == "other0" and back.output["mtu"] == 1400
        tg.cancel_scope.cancel()
    assert [r.subject for r in collector.readings if r.subject.startswith("other")] == ["other0"]
