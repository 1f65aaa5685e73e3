"""Plain reference pieces the fast verification paths are compared with."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from agent.errors import VerifyError


def reference_b64d(text: Any, what: str) -> bytes:
    """Standard base64 (URL-safe accepted), decoded the obvious way, with the verifier's error messages."""
    if not isinstance(text, str):
        raise VerifyError(f"{what}: expected a base64 string")
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerifyError(f"{what}: not valid base64") from None


def reference_b64d_canonical(text: Any, what: str) -> bytes:
    """:func:`reference_b64d`, refusing a value other than what encoding its bytes again gives (in the alphabet
    it uses; URL-safe base64 may be unpadded)."""
    raw = reference_b64d(text, what)
    if "-" in text or "_" in text:
        again = base64.urlsafe_b64encode(raw).decode("ascii")
        ok = text in (again, again.rstrip("="))
    else:
        ok = base64.b64encode(raw).decode("ascii") == text
    if not ok:
        raise VerifyError(f"{what}: not canonical base64 (encoding its bytes again gives another text: the unused "
                          "bits of its last character are not zero, or it holds characters decoding skips)")
    return raw
