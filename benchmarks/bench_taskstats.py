"""Per-pid taskstats queries per second: our client against a raw-socket floor and pyroute2.

All three query ``TASKSTATS_CMD_GET`` by pid for every pid in ``/proc`` (the list
is repeated to make each round long enough), in the same process, in
interleaved rounds; the figure of each is its best round.

- ``client``: :meth:`agent.netlink.TaskstatsClient.get_many`, which keeps a
  window of requests in flight and decodes every reply (version checked,
  layout chosen, every member unpacked) into a ``TaskStats`` kept in a list;
  like the raw loop's unpack it holds ``ac_comm`` as its raw bytes until
  read as text.
- ``raw``: the minimal loop one would write by hand: a blocking socket, one
  ``send`` and one ``recv`` per pid, and one precompiled ``struct`` unpack of
  the version-16 struct into a tuple kept in a list, as the client keeps its
  results (no names, no version handling, no error decoding). ``raw_bare`` is the same loop without the unpack: the
  cost of the two system calls and the kernel's work alone.
- ``pyroute2``: ``pyroute2.netlink.taskstats.AsyncTaskStats.get_pid_stat``,
  one awaited request at a time (its only mode).

Goals: ``client / raw >= 0.80`` and ``client / pyroute2 >= 7``.
Needs CAP_NET_ADMIN (TASKSTATS_CMD_GET is an admin command); without it
``run()`` returns ``{"skipped": reason}``.

Run: ``python -m benchmarks.bench_taskstats`` (from the project root).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.netlink import TaskstatsClient, has_net_admin, resolve_family_sync

ROUNDS = 7
MIN_QUERIES = 20000
PYROUTE2_QUERIES = 4000
GOAL_RAW = 0.80
GOAL_PYROUTE2 = 7.0

# struct taskstats version 16 as a hand-written client would spell it (560 bytes)
_TS16 = struct.Struct("=HxxIBBxxxxxx8Q32sBxxxxxxx5Ixxxx5Q" + "Q" * 23 + "Ixxxx" + "Q" * 23)
_GET = struct.Struct("=IHHIIBBHHHI")


def _pids(proc: str = "/proc") -> list[int]:
    return [int(n) for n in os.listdir(proc) if n.isdigit()]


def _raw_round(family: int, work: list[int], decode: bool) -> float:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)
    try:
        s.bind((0, 0))
        pack, unpack, size = _GET.pack, _TS16.unpack_from, _TS16.size
        results: list[tuple[Any, ...]] = []
        keep = results.append
        t0 = time.perf_counter()
        for seq, pid in enumerate(work, 1):
            s.send(pack(28, family, 1, seq, 0, 1, 1, 0, 8, 1, pid))
            data = s.recv(65536)
            if decode and len(data) >= 36 + size:
                keep(unpack(data, 36))
        return time.perf_counter() - t0
    finally:
        s.close()


async def _client_round(client: TaskstatsClient, work: list[int]) -> float:
    t0 = time.perf_counter()
    await client.get_many(work)
    return time.perf_counter() - t0


async def _pyroute2_round(ts: Any, work: list[int]) -> float:
    from pyroute2.netlink.exceptions import NetlinkError as PyrNetlinkError

    t0 = time.perf_counter()
    for pid in work:
        try:
            [m async for m in await ts.get_pid_stat(pid)]
        except PyrNetlinkError:
            pass  # a pid that ended meanwhile
    return time.perf_counter() - t0


async def _measure(rounds: int, min_queries: int, pyroute2_queries: int) -> dict[str, Any]:
    from pyroute2.netlink.taskstats import AsyncTaskStats

    pids = _pids()
    work = pids * max(1, -(-min_queries // len(pids)))
    pyr_work = work[:pyroute2_queries]
    family = resolve_family_sync().id
    best = {"client": float("inf"), "raw": float("inf"), "raw_bare": float("inf"), "pyroute2": float("inf")}
    pyr = AsyncTaskStats()
    await pyr.bind()
    try:
        async with TaskstatsClient() as client:
            await _client_round(client, pids)  # warm up both
            _raw_round(family, pids, True)
            for _ in range(rounds):
                gc.collect()  # each round starts from the same heap; results of the last one are gone
                best["client"] = min(best["client"], await _client_round(client, work))
                gc.collect()
                best["raw"] = min(best["raw"], _raw_round(family, work, True))
                best["raw_bare"] = min(best["raw_bare"], _raw_round(family, work, False))
                best["pyroute2"] = min(best["pyroute2"], await _pyroute2_round(pyr, pyr_work))
    finally:
        pyr.close()
    qps = {k: (len(pyr_work) if k == "pyroute2" else len(work)) / v for k, v in best.items()}
    return {
        "pids": len(pids),
        "queries_per_round": len(work),
        "client_qps": round(qps["client"]),
        "raw_qps": round(qps["raw"]),
        "raw_bare_qps": round(qps["raw_bare"]),
        "pyroute2_qps": round(qps["pyroute2"]),
        "ratio_vs_raw": round(qps["client"] / qps["raw"], 3),
        "ratio_vs_raw_bare": round(qps["client"] / qps["raw_bare"], 3),
        "speedup_vs_pyroute2": round(qps["client"] / qps["pyroute2"], 2),
        "goal_vs_raw": GOAL_RAW,
        "goal_vs_pyroute2": GOAL_PYROUTE2,
        "ok": qps["client"] / qps["raw"] >= GOAL_RAW and qps["client"] / qps["pyroute2"] >= GOAL_PYROUTE2,
    }


def run(rounds: int = ROUNDS, min_queries: int = MIN_QUERIES, pyroute2_queries: int = PYROUTE2_QUERIES,
        ) -> dict[str, Any]:
    """Measure; returns the figures (queries per second are best-of-``rounds``)."""
    if not has_net_admin():
        return {"skipped": "needs CAP_NET_ADMIN (TASKSTATS_CMD_GET is an admin command)"}
    return asyncio.run(_measure(rounds, min_queries, pyroute2_queries))


def main() -> None:
    res = run()
    if "skipped" in res:
        print(f"taskstats: skipped: {res['skipped']}")
        return
    print(f"taskstats: {res['pids']} pids, {res['queries_per_round']} queries a round, best of {ROUNDS}")
    print(f"  client (windowed, decoded)      {res['client_qps']:>9,} queries/s")
    print(f"  raw loop (send/recv + unpack)   {res['raw_qps']:>9,} queries/s   client/raw = {res['ratio_vs_raw']}"
          f" (goal >= {GOAL_RAW})")
    print(f"  raw loop, no unpack             {res['raw_bare_qps']:>9,} queries/s   client/bare = "
          f"{res['ratio_vs_raw_bare']}")
    print(f"  pyroute2 AsyncTaskStats         {res['pyroute2_qps']:>9,} queries/s   client/pyroute2 = "
          f"{res['speedup_vs_pyroute2']}x (goal >= {GOAL_PYROUTE2}x)")
    print(f"  {'ok' if res['ok'] else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()
