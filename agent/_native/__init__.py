"""Native helpers, used when they were built (``pip install`` compiles them when a C compiler and libsodium's
headers are there) and not turned off with ``HOSTSTAMP_NATIVE=0``.

:data:`Signer` is :class:`agent._native.edsign.Signer` (batch Ed25519 DSSE material with the GIL released), or
None: the callers then sign with the cryptography package and make the same bytes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = ["Signer", "native_signer"]

if TYPE_CHECKING:
    from .edsign import Signer as _Signer

Signer: type[_Signer] | None
try:
    if os.environ.get("HOSTSTAMP_NATIVE", "1") in ("0", "no", "false", "off"):
        raise ImportError("turned off with HOSTSTAMP_NATIVE")
    from .edsign import Signer
except ImportError:
    Signer = None


def native_signer() -> str:
    """What signs: ``libsodium`` (the native batch signer) or ``cryptography``."""
    return "libsodium" if Signer is not None else "cryptography"
