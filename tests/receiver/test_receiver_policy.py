"""Guest signature policy with real Ed25519 keys and the real verifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.receiver import GuestPolicy, Rejected
from agent.signing.event import sign_event
from agent.signing.keys import SigningKey, generate_keypair


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
