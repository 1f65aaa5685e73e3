"""The native batch signer: the same bytes as the Python path, checked input, and the GIL released."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import orjson
import pytest

from agent import _native
from agent.pipeline import SequenceStore, Stamper
from agent.pipeline.stamp import _ENV_TAIL, _PAE_HEAD
from agent.signing.dsse import pae
from agent.signing.event import PAYLOAD_TYPE, verify_event
from agent.signing.keys import SigningKey

pytestmark = pytest.mark.skipif(_native.Signer is None, reason="the native signer is not built here")


def _stamper(key: SigningKey) -> Stamper:
    return Stamper(key, "h", SequenceStore(None), clock=lambda: 1_700_000_000.25)


def test_materials_are_byte_for_byte_the_python_ones_and_verify() -> None:
    key = SigningKey.generate()
    st = _stamper(key)
    assert st._native is not None
    digests = [os.urandom(32) for _ in range(300)] + [bytes(32), b"\xff" * 32]
    native = st._materials(digests)
    assert native == [st._py_material(d) for d in digests]
    # and each is a DSSE envelope whose signature the cryptography package accepts
    import base64

    for d, mat in zip(digests[:20], native, strict=False):
        env = orjson.loads(base64.b64decode(mat))
        assert base64.b64decode(env["payload"]) == d and env["payloadType"] == PAYLOAD_TYPE
        [sig] = env["signatures"]
        assert sig["keyid"] == key.keyid
        key.verify_key().verify(base64.b64decode(sig["sig"]), pae(PAYLOAD_TYPE.encode(), d))


def test_events_are_the_same_with_and_without_the_native_signer() -> None:
    key = SigningKey.generate()
    events = [{"specversion": "1.0", "id": f"e{i}", "source": "vm/1", "type": "t", "data": {"i": i}}
              for i in range(50)]
    with_native = _stamper(key).stamp_guests([dict(e) for e in events], "vsock:3")
    plain = _stamper(key)
    plain._native = None
    without = plain.stamp_guests([dict(e) for e in events], "vsock:3")
    assert [e.body for e in with_native] == [e.body for e in without]  # type: ignore[union-attr]
    for e in with_native:
        verify_event(orjson.loads(e.body), {key.keyid: key.verify_key()})  # type: ignore[union-attr]


def test_sign_is_the_cryptography_packages_signature() -> None:
    assert _native.Signer is not None
    key = SigningKey.generate()
    signer = _native.Signer(key.seed())
    for msg in (b"", b"x", os.urandom(1000)):
        assert signer.sign(msg) == key.sign(msg)


def test_bad_input_is_refused_with_a_clear_error() -> None:
    assert _native.Signer is not None
    with pytest.raises(ValueError, match="32 bytes"):
        _native.Signer(b"short")
    signer = _native.Signer(os.urandom(32))
    parts = (_PAE_HEAD, b"{", b"}", _ENV_TAIL)
    assert signer.materials(*parts, []) == []
    with pytest.raises(ValueError, match="digest 1 is not 32 bytes"):
        signer.materials(*parts, [bytes(32), bytes(31)])
    with pytest.raises(ValueError, match="digest 0"):
        signer.materials(*parts, ["x" * 32])
    with pytest.raises(TypeError):
        signer.materials(*parts, 42)
    with pytest.raises(ValueError, match="too long"):
        signer.materials(b"x" * 5000, b"{", b"}", _ENV_TAIL, [bytes(32)])
    with pytest.raises(ValueError, match="no key"):
        _native.Signer.__new__(_native.Signer).materials(*parts, [bytes(32)])


def test_a_batch_is_signed_with_the_gil_released() -> None:
    """While one thread signs a large batch, another keeps running Python: counted, not timed. The signing
    thread reads the other's counter just before and just after the call, so only what ran during it counts;
    a long switch interval keeps the interpreter from handing the GIL over between those reads (a call that
    held the GIL throughout, such as ``sum(range(30_000_000))``, reads 0 here)."""
    assert _native.Signer is not None
    signer = _native.Signer(os.urandom(32))
    digests = [os.urandom(32) for _ in range(20000)]
    spins = [0]
    seen: list[int] = []
    done = threading.Event()

    def sign() -> None:
        before = spins[0]
        signer.materials(_PAE_HEAD, b"{", b"}", _ENV_TAIL, digests)
        seen.append(spins[0] - before)
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        t = threading.Thread(target=sign)
        t.start()
        while not done.is_set():
            spins[0] += 1
        t.join()
    finally:
        sys.setswitchinterval(old)
    # with the GIL held for the whole batch the counter could not move between the two reads
    assert seen[0] > 1000


def test_hoststamp_native_0_turns_it_off() -> None:
    code = "from agent import _native; print(_native.native_signer())"
    env = {**os.environ, "HOSTSTAMP_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "cryptography"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "libsodium"


def test_a_signer_is_keyed_once() -> None:
    """materials() reads the key without the GIL, so the key must not change under a running batch."""
    assert _native.Signer is not None
    signer = _native.Signer(os.urandom(32))
    with pytest.raises(RuntimeError, match="once"):
        signer.__init__(os.urandom(32))  # type: ignore[misc]


def _pool() -> object:
    from agent._native.edsign import SignPool

    assert _native.Signer is not None
    return SignPool(_native.Signer(os.urandom(32)), _PAE_HEAD, b"{", b"}", _ENV_TAIL, 2)


def test_a_closed_pool_refuses_work_and_closes_once() -> None:
    pool: Any = _pool()
    pool.submit([bytes(32)] * 1000)
    pool.close()
    pool.close()
    for call in (lambda: pool.submit([bytes(32)]), pool.collect, pool.fileno):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_a_forked_child_cannot_use_its_parents_pool() -> None:
    """The threads stay in the parent: in a child the pool says so instead of taking work nobody signs."""
    pool: Any = _pool()
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, and leave without running any of the parent's cleanup
            try:
                pool.submit([bytes(32)])
                said = b"accepted"
            except ValueError as exc:
                said = str(exc).encode()
            pool.close()
            os.write(w, said)
            os._exit(0)
        os.close(w)
        said = os.read(r, 1000)
        os.close(r)
        assert os.waitpid(pid, 0)[1] == 0
        assert b"forked" in said
        # the parent's pool still works
        job = pool.submit([bytes(32)])
        import select

        assert select.select([pool.fileno()], [], [], 30)[0]
        assert [j for j, _ in pool.collect()] == [job]
    finally:
        pool.close()
