"""Guest events per second through the receiver, against raw Ed25519 on the same core, and on two cores.

A sender process (the guest) writes N (60,000: long enough that filling and
draining the stages is a small part) pre-encoded length-prefixed frames to a
real ``unix:`` listener and reads acks until all N are acknowledged; the time
runs from the first frame sent to the last ack received. Events are acked only
once the ``file:`` sink has written and fsynced them. The agent's collector
settings apply (:mod:`agent.gctune`, as ``hoststamp run`` does).

This machine's speed drifts by 20 % and more within a minute, so every ratio is
taken within one round, against a floor measured just before and just after
the run it divides (their mean), and the figures are the median of ``ROUNDS``
rounds, with the lowest and highest beside them:

- ``floor``: raw signatures per second of a DSSE-PAE-sized message, one call each, with what the agent signs
  with (``signer``: the native libsodium signer when built; the cryptography package's rate is shown too);
- ``receiver_only``: frames -> checks -> dedupe -> a deliver that is durable at once -> acks: the receiver's
  own cost per event (receiver pinned to one core, sender on the other);
- ``receiver_pipeline``: the same into the real pipeline: re-stamp, JCS, digests, DSSE signature, bounded
  queue, file sink, acks, on one core; ÷ ``floor`` (goal >= 0.80). ``..._us_beyond_signature`` is what it
  spends per event beside the signature, ``..._us_allowed_at_goal`` what a ratio of 0.80 would leave for that;
- ``receiver_verify``: guest-signed events under ``guest_signatures = "verify"`` (each guest signature
  checked), then as ``receiver_pipeline`` (N/4 events); ÷ the rate of one raw verify plus one raw sign, with
  what the receiver verifies and signs with (libsodium for both when the native parts are built) (goal >= 0.80);
- ``raw_sign_two_processes_over_one``: two processes signing at once against one (raw signatures, the agent's
  signer): how far this machine's two cores scale for the signature alone; each two-core ratio is also shown
  divided by it (``..._over_raw_scaling``), the share of that scaling the agent gets;
- ``two_cores_over_one``: the pipeline load with the receiver *and* the sender sharing one core, against the
  same load on both cores (each two-core run against the mean of one-core runs just before and just after it)
  with ``sign_threads = 2`` (:class:`~agent.pipeline.threaded.ThreadedPipeline`, native signing threads, which
  then run below the loop's priority), what docs/delivery.md advises for two cores (goal >= 1.8);
  ``sign_threads = 1`` and ``sign_workers = 2`` (worker processes) are measured beside it.

The event is 280 bytes of JSON: the CloudEvents attributes, a subject, a time and a small nested object of
integers as data. Data with integral floats (``0.0``) costs about 1.5 µs more per event (the JCS slow path).

Run: ``python -m benchmarks receiver`` or ``python benchmarks/bench_receiver.py``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import _native, gctune
from agent.codec.framing import encode_frames
from agent.config import ListenerOptions
from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.parallel import build_pipeline
from agent.receiver import GuestPolicy, MemoryBatchDeliver, PipelineDeliver, Receiver
from agent.signing.event import sign_event
from agent.signing.keys import SigningKey
from agent.sinks.base import SinkContext
from agent.sinks.file import FileOptions, FileSink
from agent.transport import listen
from benchmarks._common import SIGNER, sign_floor, sign_floor_processes

#: rendered under the table in RESULTS.md
NOTES = """
How to read these. Ratios are medians over the rounds, lowest and highest in brackets. This machine's speed
drifts: the same code runs 20 to 45 % slower for seconds at a time, the memory-bound Python more than the
compute-bound signature, so one run can land anywhere in its brackets, and two runs an hour apart can differ by
more than them.

One core: ``receiver_pipeline_us_allowed_at_goal`` is what a ratio of 0.80 leaves per event for everything but
the signature (a quarter of a signature's time), and ``receiver_only_us_per_event`` what the receiver alone
costs, with no stamping, signing or file: reading the frames, parsing, checks, the duplicate window, acks. The
receiver alone already takes more than the allowance. Measured one at a time in one process, on 512-event
batches and without sockets: parsing a frame (orjson) 1.25 to 1.9 µs, the native re-stamp (its digests and
JSON) 1.6 to 2.7 µs, splicing the signatures into the events 0.3 to 0.6 µs; in the running pipeline the
queues, the sink worker, the writer thread and asyncio's tasks and futures come on top. A profile of the
receiver's core through a run (perf, shares of its busy samples): libsodium, the signatures, 50 %; the Python
interpreter 28 %; the kernel 10 % (writing the file, the socket); the native stamp 4 %; libc 4 %; OpenSSL's
SHA-256 2 %; orjson 1.4 %. At 0.80 the signatures take 80 % of the core, so everything else would have to cost
a quarter of what it costs now. That takes it out of Python: whole reads parsed, checked, stamped and signed
natively, and queues, spools and sinks that carry a read's events as one object.

Verification: one libsodium verify (40 to 54 µs) and one sign make the floor. The native check adds about 2 µs
to the verify, and a guest-signed event is larger (its guest's signature material travels with it), which costs
the pipeline a few µs more; the allowance at 0.80 is 14 to 18 µs, about what the plain pipeline alone spends
beside its signature.

Two cores: with ``sign_threads`` the event loop's thread does everything but the signatures, which the native
signing threads make without taking the GIL. The one-core runs the two-core ones are divided by have the
receiver and the sender sharing one core, trading it thousands of times a second; they are the noisiest runs
here, so the two-core ratios swing the most from round to round (1.39 to 2.14 in one run). The medians of the
rates themselves, ``two_cores_sign_threads_2_events_per_s`` over ``one_core_with_sender_events_per_s``, are a
second reading of the same ratio, less exposed to one round's noise but more to the drift between rounds.
``raw_sign_two_processes_over_one`` is how far raw signing scales on this machine's two virtual CPUs, measured
in each round beside the agent (the two slow each other down, by an amount that changes from second to
second), and ``..._over_raw_scaling`` the agent's ratio beside it; ``..._busy`` is the share of both cores the
agent kept busy. With the loop's work per event below the signature's, one signing thread is the busier side and
the loop's core idles part of the time; two threads let the loop's core take part of the signing. At the loop's
own priority they took a share of its core whenever they ran, the loop fell behind, and both cores idled about
an eighth of the time (``..._busy`` near 0.87); five nice steps below it (what the pool does when its threads
and the loop are more than the cores) the loop runs whenever it has work, the signing takes the rest, and
``..._busy`` rises to about 0.9. Worker processes (``sign_workers = 2``) pay a second parse and the job and reply
copies on top.
"""

N = 60000
ROUNDS = 5
#: signatures per floor measurement (about 0.4 s)
FLOOR_N = 20000
GOAL = 0.80
GOAL_TWO_CORES = 1.8
_PAE = 110  # bytes of a DSSE PAE over a 32-byte digest with the verifiability payload type


def frames(n: int, guest: SigningKey | None = None) -> bytes:
    events = []
    for i in range(n):
        ev: dict[str, Any] = {
            "specversion": "1.0", "id": f"guest-{i:08d}", "source": "guest://vm-17/app", "type": "io.example.guest.v1",
            "time": "2026-11-22T02:00:00Z", "subject": f"/srv/app/worker-{i % 16}",
            "datacontenttype": "application/json",
            "data": {"requests": 1000 + i, "errors": i % 7, "latency_us": {"p50": 812, "p99": 4410}, "queue": i % 64},
        }
        if guest is not None:
            sign_event(ev, guest)
        events.append(orjson.dumps(ev))
    return encode_frames(events)


def verify_floor(key: SigningKey, n: int) -> float:
    """One Ed25519 verify plus one sign per event: the floor of a verifying receiver, with what the receiver
    verifies with (libsodium when the native part is built, else the cryptography package) and what the agent
    signs with."""
    msg = os.urandom(_PAE)
    sig = key.sign(msg)
    public = key.verify_key().public
    if _native.Checker is not None:
        from agent._native.restamp import verify_detached

        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)

        def verify(sig: bytes, msg: bytes) -> object:
            return verify_detached(sig, msg, raw)
    else:
        verify = public.verify
    sign = key.sign if _native.Signer is None else _native.Signer(key.seed()).sign
    t0 = time.perf_counter()
    for _ in range(n):
        verify(sig, msg)
        sign(msg)
    return n / (time.perf_counter() - t0)


# --- the guest ------------------------------------------------------------------------------------------

#: the sender, a separate interpreter: connect, wait for "go", write every frame (from a thread) while reading
#: acks until one covers all N, print the seconds that took
_SENDER = r"""
import json, os, socket, struct, sys, threading, time
path, data_file, n, cpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if cpu != "-":
    os.sched_setaffinity(0, {int(cpu)})
data = open(data_file, "rb").read()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
sys.stdin.readline()
t0 = time.perf_counter()
w = threading.Thread(target=s.sendall, args=(data,))
w.start()
buf, acked = b"", 0
while acked < n:
    chunk = s.recv(65536)
    if not chunk:
        sys.exit(f"receiver closed the connection at ack {acked}")
    buf += chunk
    while len(buf) >= 4:
        (size,) = struct.unpack_from(">I", buf)
        if len(buf) < 4 + size:
            break
        acked = json.loads(buf[4 : 4 + size])["ack"]
        buf = buf[4 + size :]
w.join()
print(time.perf_counter() - t0, flush=True)
"""


# --- the host -----------------------------------------------------------------------------------------


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU seconds used so far by this process (all its threads) and by ``pids`` together."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    tick = os.sysconf("SC_CLK_TCK")
    others = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        others += (int(fields[11]) + int(fields[12])) / tick
    return own.ru_utime + own.ru_stime, others


async def _receive(tmp: Path, data_file: Path, n: int, key: SigningKey | None, *, sender_cpu: int | None,
                   policy: GuestPolicy | None = None, sign_workers: int = 0, sign_threads: int = 0,
                   cpu: dict[str, float] | None = None) -> float:
    """Events per second; ``cpu`` gets the CPU time per event of this process and of the signing workers."""
    path = str(tmp / "rx.sock")
    worker = pipeline = None
    tasks = []
    if key is None:
        deliver: Any = MemoryBatchDeliver()
    else:
        stats = PipelineStats()
        q = SinkQueue(10000)
        stamper = Stamper(key, "3d1219c7c4c5404aaa1f6d2a48adfda4", SequenceStore(None))
        pipeline = build_pipeline(stamper, [q], stats, sign_workers, sign_threads)
        await pipeline.start()
        sink = FileSink(str(tmp / "out.ndjson"), FileOptions(), SinkContext())
        worker = SinkWorker(sink, q, stats.sink("file"), batch_max=512)
        tasks.append(asyncio.ensure_future(worker.run()))
        deliver = PipelineDeliver(pipeline)
    rx = Receiver(ListenerOptions(uri=f"unix:{path}"), deliver, policy=policy, listener=listen(f"unix:{path}"),
                  max_inflight=4096)
    tasks.append(asyncio.ensure_future(rx.serve()))
    child = None
    try:
        while not os.path.exists(path):
            await asyncio.sleep(0.001)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SENDER, path, str(data_file), str(n), "-" if sender_cpu is None else str(sender_cpu),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        while rx.stats.connections == 0 and child.returncode is None:
            await asyncio.sleep(0.001)
        assert child.stdin is not None and child.stdout is not None
        workers = [w.proc.pid for w in pipeline.signers.workers] if sign_workers else []  # type: ignore[union-attr]
        cpu0 = _cpu_seconds(workers)
        child.stdin.write(b"go\n")
        out = await child.stdout.read()
        cpu1 = _cpu_seconds(workers)
        if await child.wait() != 0:
            raise RuntimeError(f"the sender failed (exit status {child.returncode})")
        elapsed = float(out)
        if cpu is not None:
            cpu["main_us"] = (cpu1[0] - cpu0[0]) / n * 1e6
            cpu["workers_us"] = (cpu1[1] - cpu0[1]) / n * 1e6
    finally:
        if child is not None and child.returncode is None:
            child.kill()
            await child.wait()
        tasks[-1].cancel()
        if pipeline is not None:
            await pipeline.aclose()
            pipeline.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(deliver, PipelineDeliver):
            await deliver.aclose()
    if rx.stats.accepted != n:
        raise RuntimeError(f"receiver accepted {rx.stats.accepted} of {n}")
    return n / elapsed


def _spread(values: list[float]) -> tuple[float, float, float]:
    """(median, lowest, highest)."""
    return statistics.median(values), min(values), max(values)


def run(n: int = N, rounds: int = ROUNDS) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    one, other = cpus[0], (cpus[1] if len(cpus) > 1 else None)
    key, guest = SigningKey.generate(), SigningKey.generate()
    policy = GuestPolicy("verify", {guest.keyid: guest.verify_key()})
    per: dict[str, list[float]] = {}
    cpu_of: dict[str, list[dict[str, float]]] = {}
    gc_before = gc.get_threshold()
    gctune.tune()  # as `hoststamp run` does once it is set up

    def note(name: str, value: float) -> None:
        per.setdefault(name, []).append(value)

    def floor() -> float:
        return sign_floor(key, FLOOR_N, _PAE)

    try:
        with tempfile.TemporaryDirectory(prefix="hoststamp-bench-") as tmp_s:
            tmp = Path(tmp_s)
            plain, signed = tmp / "frames.bin", tmp / "signed.bin"
            plain.write_bytes(frames(n))
            signed.write_bytes(frames(n // 4, guest))

            def one_core(tag: str) -> float:
                """The pipeline load with the receiver and the sender sharing one core."""
                os.sched_setaffinity(0, {one})
                d = tmp / f"one-{tag}"
                d.mkdir()
                rate = asyncio.run(_receive(d, plain, n, key, sender_cpu=one))
                note("one", rate)
                return rate

            for i in range(rounds):
                os.sched_setaffinity(0, {one})
                note("floor_cryptography", sign_floor(key, FLOOR_N, _PAE, signer="cryptography"))
                d = tmp / f"only-{i}"
                d.mkdir()
                note("receiver_only", asyncio.run(_receive(d, plain, n, None, sender_cpu=other)))
                f0 = floor()
                d = tmp / f"pipeline-{i}"
                d.mkdir()
                rate = asyncio.run(_receive(d, plain, n, key, sender_cpu=other))
                f1 = floor()
                note("floor", (f0 + f1) / 2)
                note("receiver_pipeline", rate)
                note("receiver_pipeline_over_floor", rate / ((f0 + f1) / 2))
                v0 = verify_floor(key, FLOOR_N // 4)
                d = tmp / f"verify-{i}"
                d.mkdir()
                rate = asyncio.run(_receive(d, signed, n // 4, key, sender_cpu=other, policy=policy))
                v1 = verify_floor(key, FLOOR_N // 4)
                note("verify_floor", (v0 + v1) / 2)
                note("receiver_verify", rate)
                note("receiver_verify_over_verify_floor", rate / ((v0 + v1) / 2))
                if other is None:
                    continue
                # how far raw signing itself scales here: two signing processes at once against one, the one
                # measured just before and just after
                os.sched_setaffinity(0, set(cpus))
                s0 = sign_floor_processes(FLOOR_N, _PAE, 1)
                s2 = sign_floor_processes(FLOOR_N, _PAE, 2)
                s1 = sign_floor_processes(FLOOR_N, _PAE, 1)
                note("raw_two_over_one", s2 / ((s0 + s1) / 2))
                base = one_core(f"first-{i}")
                for name, workers, threads in (("two", 0, 1), ("two_threads_2", 0, 2), ("two_workers", 2, 0)):
                    if threads and SIGNER != "libsodium":
                        continue  # sign_threads needs the native signer
                    os.sched_setaffinity(0, set(cpus))
                    d = tmp / f"{name}-{i}"
                    d.mkdir()
                    cpu: dict[str, float] = {}
                    rate = asyncio.run(_receive(d, plain, n, key, sender_cpu=None, sign_workers=workers,
                                                sign_threads=threads, cpu=cpu))
                    after = one_core(f"{name}-{i}")
                    note(name, rate)
                    # against one core measured just before and just after it, as the floors are
                    note(f"{name}_over_one", rate / ((base + after) / 2))
                    # the share of the machine's own two-core scaling (this round's) the agent gets
                    note(f"{name}_over_raw", per[f"{name}_over_one"][-1] / per["raw_two_over_one"][-1])
                    base = after
                    cpu["busy"] = (cpu["main_us"] + cpu["workers_us"]) * rate / 2e6
                    cpu_of.setdefault(name, []).append(cpu)
                os.sched_setaffinity(0, {one})
                if "two_threads_2" in per:  # the agent as set up for two cores, against one core's raw signing
                    note("two_over_floor", per["two_threads_2"][-1] / floor())
    finally:
        os.sched_setaffinity(0, set(cpus))
        gc.unfreeze()
        gc.set_threshold(*gc_before)
    med = {k: statistics.median(v) for k, v in per.items()}

    def ratio(name: str) -> str:
        m, lo, hi = _spread(per[name])
        return f"{m:.3f} ({lo:.3f}–{hi:.3f})"

    out: dict[str, Any] = {
        "events": n,
        "rounds": rounds,
        "cores": len(cpus),
        "signer": SIGNER,
        "floor_signs_per_s": med["floor"],
        "floor_cryptography_signs_per_s": med["floor_cryptography"],
        "verify_floor_per_s": med["verify_floor"],
        "receiver_only_events_per_s": med["receiver_only"],
        "receiver_only_us_per_event": 1e6 / med["receiver_only"],
        "receiver_pipeline_events_per_s": med["receiver_pipeline"],
        "receiver_pipeline_us_beyond_signature": 1e6 / med["receiver_pipeline"] - 1e6 / med["floor"],
        # what the goal leaves for everything but the signature, to set beside the two figures above
        "receiver_pipeline_us_allowed_at_goal": 1e6 / (GOAL * med["floor"]) - 1e6 / med["floor"],
        "receiver_verify_events_per_s": med["receiver_verify"],
        "receiver_pipeline_over_floor": ratio("receiver_pipeline_over_floor"),
        "receiver_verify_over_verify_floor": ratio("receiver_verify_over_verify_floor"),
        "goal_receiver_pipeline_over_floor": f">= {GOAL}",
        "goal_receiver_verify_over_verify_floor": f">= {GOAL}",
    }
    if "one" in med:
        out["one_core_with_sender_events_per_s"] = med["one"]
        out["goal_two_cores_over_one"] = f">= {GOAL_TWO_CORES}"
        out["raw_sign_two_processes_over_one"] = ratio("raw_two_over_one")
        for name, label in (("two", "sign_threads_1"), ("two_threads_2", "sign_threads_2"),
                            ("two_workers", "sign_workers_2")):
            if name not in med:
                continue
            out[f"two_cores_{label}_events_per_s"] = med[name]
            out[f"two_cores_{label}_over_one"] = ratio(f"{name}_over_one")
            out[f"two_cores_{label}_over_raw_scaling"] = ratio(f"{name}_over_raw")
            # where the two cores went: CPU per event of the agent's process (its threads included) and of
            # worker processes, and the share of both cores kept busy (medians over the rounds)
            cpus_ = cpu_of[name]
            out[f"two_cores_{label}_main_cpu_us_per_event"] = statistics.median(c["main_us"] for c in cpus_)
            if name == "two_workers":
                out[f"two_cores_{label}_workers_cpu_us_per_event"] = statistics.median(
                    c["workers_us"] for c in cpus_)
            out[f"two_cores_{label}_busy"] = statistics.median(c["busy"] for c in cpus_)
        if "two_threads_2" in med:  # the goal, with what docs/delivery.md advises for two cores
            out["two_cores_over_one"] = ratio("two_threads_2_over_one")
            out["two_cores_sign_threads_2_over_floor"] = ratio("two_over_floor")
    return out


def main() -> None:
    for k, v in run().items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
