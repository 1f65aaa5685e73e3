"""Guest signatures: ``off``, ``verify`` (check what is signed) or ``require`` (refuse what is not).

Under ``verify`` and ``require`` a signature must verify against a key in the
trust store; one made by an unknown key is refused like a bad one. The event
goes on as the guest sent it, so its signature material travels with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from ..errors import ConfigError, VerifyError
from ..signing.event import verify_event
from ..signing.keys import VerifyKey, load_verify_keys
from .validate import Rejected

__all__ = ["GuestPolicy", "Mode"]

Mode = Literal["off", "verify", "require"]
Verify = Callable[[Mapping[str, Any], Mapping[str, VerifyKey]], dict[str, Any]]


class GuestPolicy:
    def __init__(self, mode: Mode = "off", keys: Mapping[str, VerifyKey] | None = None,
                 verify: Verify = verify_event) -> None:
        if mode not in ("off", "verify", "require"):
            raise ConfigError(f"guest_signatures must be off, verify or require, got {mode!r}",
                              key="guest_signatures")
        self.mode = mode
        self.keys = dict(keys or {})
        if mode != "off" and not self.keys:
            raise ConfigError(f"guest_signatures = {mode!r} needs trusted_keys", key="trusted_keys")
        self._verify = verify

    @classmethod
    def load(cls, mode: Mode, paths: Sequence[str]) -> GuestPolicy:
        """Read the trust store (PEM public keys) named in the configuration."""
        return cls(mode, load_verify_keys(tuple(paths)) if paths else {})

    def check(self, event: Mapping[str, Any]) -> None:
        if self.mode == "off":
            return
        if not event.get("dssematerial"):
            if self.mode == "require":
                raise Rejected("unsigned", "event carries no dssematerial and signatures are required")
            return
        try:
            self._verify(event, self.keys)
        except VerifyError as exc:
            raise Rejected("signature", str(exc)) from None
