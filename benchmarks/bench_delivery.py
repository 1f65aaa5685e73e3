"""Guest events received per second (unix socket -> check -> stamp -> sign -> file, acked), against raw Ed25519.

The receiver runs in this process, pinned to one core; a sender process on the
other core writes pre-encoded frames to a real unix socket and reads the acks.
Events are acknowledged only once the file sink has fsynced them, so the time
runs from the first frame sent to the last ack received. Figures, each the
best of a few rounds, with the floors measured in the same run:

- ``unsigned_over_sign_floor``: unsigned guest events, rate ÷ raw Ed25519 signs/s (goal >= 0.80);
- ``verified_over_floor``: guest-signed events under ``guest_signatures = "verify"``, rate ÷ the rate of
  one raw verify plus one raw sign per event (goal >= 0.80);
- ``two_cores_over_one``: the same unsigned load (sender included) on both cores, with signatures made in
  worker processes (:class:`~agent.pipeline.parallel.ParallelPipeline`, 2 workers) ÷ that load with the
  receiver and the sender sharing one core (goal >= 1.8);
- ``spool_over_memory_queue``: probe readings -> pipeline -> ``file:`` through a disk spool
  (``spool_fsync = "batch"``) ÷ the same through the in-memory queue (no goal; the spool's price);
- ``memory_growth_mb`` (only with ``HOSTSTAMP_BENCH_SLOW=1``): resident memory growth while the sink is
  down for ``HOSTSTAMP_BENCH_DOWN_S`` (default 60) seconds under steady load, the backlog going to the
  spool (goal <= 20 MB).

Run: ``python -m benchmarks delivery`` or ``python benchmarks/bench_delivery.py``.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import socket
import struct
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from agent.config import ListenerOptions
from agent.model import Reading
from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.router import Pipeline
from agent.receiver import GuestPolicy, PipelineDeliver, Receiver
from agent.signing.keys import SigningKey
from agent.sinks.base import SinkContext
from agent.sinks.file import FileOptions, FileSink
from agent.transport import listen
from benchmarks._common import sign_floor

N = 20000
ROUNDS = 3
GOAL = 0.80
GOAL_TWO_CORES = 1.8
GOAL_MEMORY_MB = 20.0
_PAE = 110  # bytes of a DSSE PAE over a 32-byte digest with the verifiability payload type


# --- what guests send ---------------------------------------------------------------------------------


def _data(i: int) -> dict[str, Any]:
    return {"probeSource": "guest", "inputs": ["/proc/pressure/cpu"],
            "output": {"some_avg10": 0.12, "some_avg60": 0.08, "some_total": 123456789 + i, "full_avg10": 0.0,
                       "full_total": 4567 + i, "task": f"worker-{i % 64}", "pid": 4000 + i % 512}}


def unsigned_events(n: int) -> list[bytes]:
    return [orjson.dumps({"specversion": "1.0", "id": f"g-{i}", "source": "guest://vm-17/psi",
                          "type": "io.example.guest.v1.psi", "subject": f"task/{i % 64}",
                          "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
                          "data": _data(i)}) for i in range(n)]


def signed_events(n: int, guest: SigningKey) -> list[bytes]:
    """Events as an agent inside the guest would send them: signed with the guest's own key."""
    st = Stamper(guest, "vm-17", SequenceStore(None))
    return [st.stamp(Reading(probe="psi", subject=f"task/{i % 64}", output=_data(i)["output"],
                             inputs=("/proc/pressure/cpu",), probe_source="guest", domain="guest")).body
            for i in range(n)]


# --- the sender process -------------------------------------------------------------------------------


def _acks(sock: socket.socket, n: int) -> None:
    buf = b""
    settled = 0
    while settled < n:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError(f"receiver closed the connection after {settled} acks")
        buf += chunk
        while len(buf) >= 4:
            (size,) = struct.unpack_from(">I", buf)
            if len(buf) < 4 + size:
                break
            settled = orjson.loads(buf[4 : 4 + size])["ack"]
            buf = buf[4 + size :]


def _sender(path: str, frames: bytes, n: int, cpu: int | None, conn: Connection) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    conn.recv()  # go
    t0 = time.perf_counter()
    writer = threading.Thread(target=sock.sendall, args=(frames,))
    writer.start()
    _acks(sock, n)
    writer.join()
    conn.send(time.perf_counter() - t0)
    sock.close()


# --- the receiver, in this process --------------------------------------------------------------------


async def _receive(payloads: list[bytes], tmp: Path, *, policy: GuestPolicy, key: SigningKey,
                   sender_cpu: int | None, sign_workers: int = 0) -> float:
    path = str(tmp / "rx.sock")
    stats = PipelineStats()
    stamper = Stamper(key, "3d1219c7c4c5404aaa1f6d2a48adfda4", SequenceStore(None))
    q = SinkQueue(10000)
    sink = FileSink(str(tmp / "rx.ndjson"), FileOptions(), SinkContext())
    worker = SinkWorker(sink, q, stats.sink("file"), batch_max=512)
    pipeline: Any = Pipeline(stamper, [q], stats)
    if sign_workers:
        from agent.pipeline.parallel import ParallelPipeline

        pipeline = ParallelPipeline(stamper, [q], stats, workers=sign_workers)
        await pipeline.start()
    deliver = PipelineDeliver(pipeline)
    rx = Receiver(ListenerOptions(uri=f"unix:{path}"), deliver, policy=policy, listener=listen(f"unix:{path}"),
                  max_inflight=4096)
    frames = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_sender, args=(path, frames, len(payloads), sender_cpu, there), daemon=True)
    tasks = [asyncio.ensure_future(worker.run()), asyncio.ensure_future(rx.serve())]
    try:
        proc.start()
        await asyncio.sleep(0)
        while rx.stats.connections == 0:
            await asyncio.sleep(0.01)
        here.send("go")
        elapsed: float = await asyncio.to_thread(here.recv)
    finally:
        proc.join(timeout=10)
        tasks[1].cancel()
        q.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await deliver.aclose()
        if sign_workers:
            await pipeline.aclose()
    assert stats.sink("file").sent == len(payloads), stats.sink("file")
    return len(payloads) / elapsed


# --- the spool's cost: the same readings through a memory queue and through a spool -----------------


async def _through_queue(key: SigningKey, readings: list[Reading], tmp: Path, spool: bool) -> float:
    from agent.pipeline.spool import Spool
    from agent.pipeline.spoolqueue import SpoolQueue

    stats = PipelineStats()
    q = SpoolQueue(Spool(tmp / "spool", fsync="batch"), "block") if spool else SinkQueue(10000)
    sink = FileSink(str(tmp / "out.ndjson"), FileOptions(), SinkContext())
    worker = SinkWorker(sink, q, stats.sink("file"), batch_max=512)
    pipeline = Pipeline(Stamper(key, "h", SequenceStore(None)), [q], stats)
    t0 = time.perf_counter()
    task = asyncio.ensure_future(worker.run())
    for r in readings:
        await pipeline.submit(r)
    pipeline.close()
    await task
    dt = time.perf_counter() - t0
    if isinstance(q, SpoolQueue):
        await q.aclose()
    return len(readings) / dt


# --- floors -------------------------------------------------------------------------------------------


def verify_floor(key: SigningKey, n: int) -> float:
    msg = os.urandom(_PAE)
    sig = key.sign(msg)
    vk = key.verify_key()
    t0 = time.perf_counter()
    for _ in range(n):
        vk.verify(sig, msg)
    return n / (time.perf_counter() - t0)


# --- memory while a sink is down (slow; opt-in) -------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory_while_down(seconds: float, rate: float = 5000.0) -> dict[str, Any]:
    """Unix sink to nobody, spool on, ``rate`` readings/s for ``seconds``: RSS growth after warm-up."""
    from agent.pipeline.spool import Spool
    from agent.pipeline.spoolqueue import SpoolQueue
    from agent.sinks.socket import SocketOptions, UnixSink

    async def go(tmp: Path) -> dict[str, Any]:
        key = SigningKey.generate()
        stats = PipelineStats()
        spool = Spool(tmp / "spool", max_bytes=4 << 30, fsync="batch")
        q = SpoolQueue(spool, "block")
        sink = UnixSink(str(tmp / "nobody.sock"), SocketOptions(max_unacked=1000, send_timeout=1.0,
                                                                 backoff_max=1.0), SinkContext())
        worker = SinkWorker(sink, q, stats.sink("unix"), batch_max=512)
        pipeline = Pipeline(Stamper(key, "h", SequenceStore(None)), [q], stats)
        wtask = asyncio.ensure_future(worker.run())
        readings = [Reading(probe="cgroup", subject=f"/s/{i}.service", output=_data(i)["output"]) for i in range(500)]
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - t0 < seconds:
            while sent < (now - t0) * rate:
                await pipeline.submit(readings[sent % 500])
                sent += 1
            samples.append((now - t0, _rss_mb()))
            await asyncio.sleep(0.05)
        wtask.cancel()
        await asyncio.gather(wtask, return_exceptions=True)
        await sink.sender.aclose()  # drops what it holds: the sink never came back
        q.close()
        await q.aclose()
        warm = [m for t, m in samples if t >= min(5.0, seconds / 4)]
        return {"seconds": seconds, "events": sent, "spooled_mb": round(spool.bytes / 1e6, 1),
                "rss_start_mb": round(warm[0], 1), "rss_end_mb": round(warm[-1], 1),
                "memory_growth_mb": round(max(warm) - warm[0], 1)}

    with tempfile.TemporaryDirectory(prefix="hoststamp-bench-") as tmp:
        return asyncio.run(go(Path(tmp)))


# --- the whole run ------------------------------------------------------------------------------------


def run(n: int = N, rounds: int = ROUNDS) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    one, other = cpus[0], (cpus[1] if len(cpus) > 1 else None)
    key, guest = SigningKey.generate(), SigningKey.generate()
    unsigned = unsigned_events(n)
    signed = signed_events(n, guest)
    off = GuestPolicy("off")
    verify = GuestPolicy("verify", {guest.keyid: guest.verify_key()})
    best = dict.fromkeys(("sign", "verify", "unsigned", "verified", "one", "two", "memq", "spoolq"), 0.0)
    readings = [Reading(probe="cgroup", subject=f"/s/{i % 200}.service", output=_data(i)["output"])
                for i in range(n)]

    def measure(name: str, payloads: list[bytes], tmp: Path, **kw: Any) -> None:
        tmp.mkdir()
        best[name] = max(best[name], asyncio.run(_receive(payloads, tmp, key=key, **kw)))

    try:
        with tempfile.TemporaryDirectory(prefix="hoststamp-bench-") as tmp:
            for i in range(rounds):
                os.sched_setaffinity(0, {one})
                best["sign"] = max(best["sign"], sign_floor(key, n))
                best["verify"] = max(best["verify"], verify_floor(key, n // 2))
                d = Path(tmp) / str(i)
                d.mkdir()
                measure("unsigned", unsigned, d / "u", policy=off, sender_cpu=other)
                measure("verified", signed, d / "v", policy=verify, sender_cpu=other)
                for name, spooled in (("memq", False), ("spoolq", True)):
                    (d / name).mkdir()
                    best[name] = max(best[name], asyncio.run(_through_queue(key, readings, d / name, spooled)))
                if other is None:
                    continue
                # the same load on one core (sender included) and on both, signing in worker processes
                measure("one", unsigned, d / "o", policy=off, sender_cpu=one)
                os.sched_setaffinity(0, set(cpus))
                measure("two", unsigned, d / "p", policy=off, sender_cpu=None, sign_workers=2)
    finally:
        os.sched_setaffinity(0, set(cpus))
    both = 1 / (1 / best["sign"] + 1 / best["verify"])
    out: dict[str, Any] = {
        "events": n,
        "cores": len(cpus),
        "sign_floor_per_s": best["sign"],
        "verify_floor_per_s": best["verify"],
        "unsigned_events_per_s": best["unsigned"],
        "unsigned_over_sign_floor": best["unsigned"] / best["sign"],
        "verified_events_per_s": best["verified"],
        "verified_over_floor": best["verified"] / both,
        "goal_over_floor": f">= {GOAL}",
        "readings_memory_queue_per_s": best["memq"],
        "readings_spool_batch_per_s": best["spoolq"],
        "spool_over_memory_queue": best["spoolq"] / best["memq"],
    }
    if best["two"]:
        out["one_core_with_sender_events_per_s"] = best["one"]
        out["two_cores_sign_workers_events_per_s"] = best["two"]
        out["two_cores_over_one"] = best["two"] / best["one"]
        out["goal_two_cores_over_one"] = f">= {GOAL_TWO_CORES}"
    if os.environ.get("HOSTSTAMP_BENCH_SLOW"):
        mem = memory_while_down(float(os.environ.get("HOSTSTAMP_BENCH_DOWN_S", "60")))
        out["sink_down"] = mem
        out["goal_memory_growth_mb"] = f"<= {GOAL_MEMORY_MB}"
    return out


def main() -> None:
    for k, v in run().items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
