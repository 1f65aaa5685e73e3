"""Native helpers, used when they were built (``pip install`` compiles them when a C compiler and the
headers of libsodium and OpenSSL are there) and not turned off with ``HOSTSTAMP_NATIVE=0``.

- :data:`Signer` is :class:`agent._native.edsign.Signer` (batch Ed25519 DSSE material with the GIL released),
  or None: the callers then sign with the cryptography package and make the same bytes.
- :data:`Restamper` is :class:`agent._native.restamp.Restamper` (the planned path of
  :mod:`agent.pipeline.guest` for one event), or None: the Python planned path makes the same bytes.
- :data:`check_passes` is :func:`agent._native.restamp.check_passes` (True when the receiver's attribute checks
  certainly pass an event, and its nesting is within a depth when one is given), or None.
- :data:`Checker` is :class:`agent._native.restamp.Checker` (the common case of a guest signature check, Ed25519
  by libsodium), or None.
- :data:`verify_detached` is :func:`agent._native.restamp.verify_detached` (one Ed25519 signature checked by
  libsodium: ``(signature, message, raw public key) -> bool``), or None.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

__all__ = ["Checker", "Restamper", "Signer", "check_passes", "native_signer", "parts", "verify_detached"]

if TYPE_CHECKING:
    from .edsign import Signer as _Signer
    from .restamp import Checker as _Checker
    from .restamp import Restamper as _Restamper

_OFF = os.environ.get("HOSTSTAMP_NATIVE", "1") in ("0", "no", "false", "off")

Signer: type[_Signer] | None
try:
    if _OFF:
        raise ImportError("turned off with HOSTSTAMP_NATIVE")
    from .edsign import Signer
except ImportError:
    Signer = None

Restamper: type[_Restamper] | None
Checker: type[_Checker] | None
check_passes: Callable[..., bool] | None
verify_detached: Callable[[bytes, bytes, bytes], bool] | None
try:
    if _OFF:
        raise ImportError("turned off with HOSTSTAMP_NATIVE")
    from .restamp import Checker, Restamper, check_passes, verify_detached
except ImportError:
    Restamper = Checker = check_passes = verify_detached = None


def native_signer() -> str:
    """What signs: ``libsodium`` (the native batch signer) or ``cryptography``."""
    return "libsodium" if Signer is not None else "cryptography"


def parts() -> dict[str, bool]:
    """Which native parts this agent runs with (what ``hoststamp status`` shows): the signer (``edsign``), and
    the guest stamp and checks (``restamp``)."""
    return {"signer": Signer is not None, "restamp": Restamper is not None}
