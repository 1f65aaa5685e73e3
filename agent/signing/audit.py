"""What ``hoststamp verify`` says of an event beyond its own signature.

A valid signature covers the attributes it lists; anything else on the event
is not covered. :func:`audit` names those:

- the host's stamp (``hostid``, ``hostreceivedat``, ``sequence``, ``hostpeer``)
  and a guest's moved material (``guestdssematerial``, ``guestsignedextattrs``)
  are always signed by the host: one present but not listed in
  ``signedextattrs`` was put there after signing (a host reading made to look
  like a guest's, say), which is a problem;
- any other uncovered attribute is a note: it may be legitimate (a consumer's
  own annotation), but nothing vouches for it.

An event received from a guest keeps the guest's signature material
(``guestdssematerial``). With the guest's key among the trusted ones, that
signature is checked on the event with the host's attributes taken away (what
the guest sent): a failure is a problem. Without the key, or when the guest
signed attributes the host overwrites, it is noted as not checked.

:class:`Tally` folds notes that repeat on every event into one line each.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import VerifyError
from .checker import verify_event
from .dsse import b64d, envelope_parts
from .keys import VerifyKey

__all__ = ["ALWAYS_SIGNED", "Finding", "Tally", "audit", "guest_event"]

#: attributes the host always lists in ``signedextattrs`` when it writes them
ALWAYS_SIGNED = ("hostid", "hostreceivedat", "sequence", "hostpeer", "guestdssematerial", "guestsignedextattrs")
_HOST_STAMP = ALWAYS_SIGNED[:4]
_MATERIAL = ("dssematerial", "signedextattrs")


@dataclass(frozen=True, slots=True)
class Finding:
    #: a problem (verification fails) or a note
    problem: bool
    code: str
    message: str


def guest_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as its guest signed it: the host's attributes taken away, the guest's material back in place."""
    guest = {k: v for k, v in event.items() if k not in ALWAYS_SIGNED and k not in _MATERIAL}
    guest["dssematerial"] = event["guestdssematerial"]
    if (names := event.get("guestsignedextattrs")) is not None:
        guest["signedextattrs"] = names
    return guest


def _guest_keyids(material: Any) -> list[str] | None:
    try:
        return [keyid for keyid, _sig in envelope_parts(b64d(material, "guestdssematerial"))[2]]
    except (VerifyError, binascii.Error, ValueError):
        return None


def _check_guest(event: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> Finding | None:
    keyids = _guest_keyids(event["guestdssematerial"])
    if keyids is None:
        return Finding(False, "guest-unchecked", "guest signature not checked: its material is not a DSSE envelope")
    if not any(k in keys for k in keyids):
        named = ", ".join(k[:16] for k in keyids) or "none"
        return Finding(False, "guest-unchecked", f"guest signature not checked: no trusted key for it (signed by: "
                                                 f"{named}; give its public key with --pub)")
    names = event.get("guestsignedextattrs")
    overwritten = [n for n in _HOST_STAMP if isinstance(names, str) and n in names.split(",")]
    if overwritten:
        return Finding(False, "guest-unchecked", f"guest signature not checked: the guest signed "
                                                 f"{', '.join(overwritten)}, which the host overwrites")
    try:
        verify_event(guest_event(event), keys)
    except VerifyError as exc:
        return Finding(True, "guest-signature", f"guest signature: {exc}")
    return None


def audit(event: Mapping[str, Any], covered: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> list[Finding]:
    """What to say of ``event``, whose own signature verified and covers ``covered`` (:func:`verify_event`)."""
    found: list[Finding] = []
    for name in event:
        if name in covered or name in _MATERIAL:
            continue
        if name in ALWAYS_SIGNED:
            found.append(Finding(True, "unsigned-stamp", f"{name} is on the event but not signed (not in "
                                                         "signedextattrs): it was added after signing"))
        else:
            found.append(Finding(False, "unsigned", f"attribute {name!r} is not covered by the signature"))
    if "guestdssematerial" in covered and (guest := _check_guest(event, keys)) is not None:
        found.append(guest)
    return found


@dataclass(slots=True)
class Tally:
    """Notes by message: the first place each was seen, its code, and how many times."""

    seen: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, where: str, finding: Finding) -> None:
        entry = self.seen.get(finding.message)
        if entry is None:
            if len(self.seen) < 256:  # distinct messages kept; a hostile file's endless variety is not
                self.seen[finding.message] = [where, finding.code, 1]
            return
        entry[2] += 1

    def lines(self) -> list[tuple[str, str, str]]:
        """(code, first place, message with how many events it concerns) per message."""
        return [(code, where, message if count == 1 else f"{message} ({count} events; the first here)")
                for message, (where, code, count) in self.seen.items()]
