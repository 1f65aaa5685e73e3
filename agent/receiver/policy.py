"""Guest signatures: ``off``, ``verify`` (check what is signed) or ``require`` (refuse what is not).

Under ``verify`` and ``require`` a signature must verify against a key in the
trust store; one made by an unknown key is refused like a bad one. The event
goes on as the guest sent it, so its signature material travels with it.

The check is :class:`~agent.signing.checker.EventChecker`: the same checks as
:func:`~agent.signing.checker.verify_event`, without building the verified event,
and with the digests of what repeats from event to event cached (bounded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from ..errors import ConfigError, VerifyError
from ..signing.checker import EventChecker
from ..signing.keys import VerifyKey, load_verify_keys
from .validate import Rejected

__all__ = ["GuestPolicy", "Mode"]

Mode = Literal["off", "verify", "require"]
#: a verifier in the shape of ``verify_event(event, keys)``; raises VerifyError
Verify = Callable[[Mapping[str, Any], Mapping[str, VerifyKey]], object]


class GuestPolicy:
    def __init__(self, mode: Mode = "off", keys: Mapping[str, VerifyKey] | None = None,
                 verify: Verify | None = None) -> None:
        if mode not in ("off", "verify", "require"):
            raise ConfigError(f"guest_signatures must be off, verify or require, got {mode!r}",
                              key="guest_signatures")
        self.mode = mode
        self.keys = dict(keys or {})
        if mode != "off" and not self.keys:
            raise ConfigError(f"guest_signatures = {mode!r} needs trusted_keys", key="trusted_keys")
        #: the trust store is read here, once; a new configuration makes a new policy
        self.checker = EventChecker(self.keys)
        self._check: Callable[[Mapping[str, Any]], object] = (
            self.checker.check if verify is None else lambda event: verify(event, self.keys)
        )

    @classmethod
    def load(cls, mode: Mode, paths: Sequence[str]) -> GuestPolicy:
        """Read the trust store (PEM public keys) named in the configuration."""
        return cls(mode, load_verify_keys(tuple(paths), public_only="a trust store") if paths else {})

    def check(self, event: Mapping[str, Any]) -> None:
        if self.mode == "off":
            return
        if not event.get("dssematerial"):
            if self.mode == "require":
                raise Rejected("unsigned", "event carries no dssematerial and signatures are required")
            return
        try:
            self._check(event)
        except VerifyError as exc:
            raise Rejected("signature", str(exc)) from None
