"""Guest signature policy with real Ed25519 keys and the real verifier."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError, VerifyError
from agent.receiver import GuestPolicy, Rejected
from agent.signing.event import sign_event, verify_event
from agent.signing.keys import SigningKey, VerifyKey, generate_keypair


def guest_event(key: SigningKey | None, **over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"specversion": "1.0", "id": "g-1", "source": "guest://vm1", "type": "io.example.v1",
                          "data": {"n": 1}, "app": "x"}
    if key is not None:
        sign_event(ev, key, ["app"])
    ev.update(over)
    return ev


@pytest.fixture
def guest(tmp_path: Path) -> tuple[SigningKey, Path]:
    return generate_keypair(tmp_path / "guest"), tmp_path / "guest" / "host.pub"


def test_off_takes_anything(guest: tuple[SigningKey, Path]) -> None:
    GuestPolicy("off").check(guest_event(None))
    GuestPolicy("off").check(guest_event(guest[0], data={"n": 2}))


def test_verify_takes_unsigned_and_good_refuses_bad(guest: tuple[SigningKey, Path]) -> None:
    key, pub = guest
    policy = GuestPolicy.load("verify", [str(pub)])
    policy.check(guest_event(None))
    policy.check(guest_event(key))
    with pytest.raises(Rejected) as info:
        policy.check(guest_event(key, data={"n": 2}))
    assert info.value.reason == "signature"


def test_unknown_signer_is_refused(guest: tuple[SigningKey, Path], tmp_path: Path) -> None:
    stranger = generate_keypair(tmp_path / "stranger")
    policy = GuestPolicy.load("verify", [str(guest[1])])
    with pytest.raises(Rejected, match="trusted"):
        policy.check(guest_event(stranger))


def test_require_refuses_unsigned(guest: tuple[SigningKey, Path]) -> None:
    key, pub = guest
    policy = GuestPolicy.load("require", [str(pub)])
    policy.check(guest_event(key))
    with pytest.raises(Rejected) as info:
        policy.check(guest_event(None))
    assert info.value.reason == "unsigned"


def test_verify_without_keys_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="trusted_keys"):
        GuestPolicy("require")
    with pytest.raises(ConfigError):
        GuestPolicy("sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("tamper", [
    lambda ev: ev.__setitem__("data", {"n": 2}),
    lambda ev: ev.__setitem__("app", "y"),
    lambda ev: ev.pop("app"),
    lambda ev: ev.__setitem__("signedextattrs", ""),
    lambda ev: ev.__setitem__("data_base64", "AAAA"),
    lambda ev: ev.__setitem__("time", "not a time"),
    lambda ev: ev.__setitem__("dssematerial", ev["dssematerial"][:-8]),
    lambda ev: ev.__setitem__("dssematerial", "bm90IGpzb24="),
])
def test_refusals_carry_the_verifier_reason(guest: tuple[SigningKey, Path], tamper: Any) -> None:
    key, pub = guest
    policy = GuestPolicy.load("require", [str(pub)])
    policy.check(guest_event(key))
    ev = guest_event(key)
    tamper(ev)
    with pytest.raises(VerifyError) as expected:
        verify_event(ev, policy.keys)
    before = dict(ev)
    with pytest.raises(Rejected) as info:
        policy.check(ev)
    assert (info.value.reason, info.value.detail) == ("signature", str(expected.value))
    assert ev == before


def test_a_given_verifier_is_used(guest: tuple[SigningKey, Path]) -> None:
    key = guest[0]
    seen: list[Mapping[str, Any]] = []

    def refuse_all(event: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> None:
        seen.append(event)
        raise VerifyError("no, never")

    policy = GuestPolicy("verify", {key.keyid: key.verify_key()}, verify=refuse_all)
    with pytest.raises(Rejected, match="no, never"):
        policy.check(guest_event(key))
    assert len(seen) == 1
