"""What ``hoststamp verify`` says of an event beyond its own signature.

A valid signature covers the attributes it lists; anything else on the event
is not covered. :func:`audit` names those:

- the host's stamp (``hostid``, ``hostreceivedat``, ``sequence``, ``hostpeer``)
  and a guest's moved material (``guestdssematerial``, ``guestsignedextattrs``,
  and the guest's own values of the host's attributes: ``guesthostid``,
  ``guesthostreceivedat``, ``guestsequence``, ``guesthostpeer``) are always
  signed by the host: one present but not listed in
  ``signedextattrs`` was put there after signing (a host reading made to look
  like a guest's, say), which is a problem;
- any other uncovered attribute is a note: it may be legitimate (a consumer's
  own annotation), but nothing vouches for it;
- a member name twice in one object (:func:`~agent.codec.exact.duplicate_name`) is a problem:
  readers disagree on which of the two values they take.

An event received from a guest keeps the guest's signature material
(``guestdssematerial``). Given the guest's key (``--guest-pub``: guest keys
are trusted for guest signatures only, never for the host's own), that
signature is checked on the event with the host's attributes taken away and
the guest's own values of them put back (what the guest sent), and where the
host wrote the guest's big integers as strings (as the receiver documents it
does), also with them read back as numbers: when neither form matches, it is
a problem. A guest signature over a host attribute whose
kept value is not on the event cannot hold, and is a problem too. Without the
key, or when the guest is a relay that signed its own guest's material (which
the next host does not carry on), it is noted as not checked.

:class:`Tally` folds notes that repeat on every event into one line each.
"""

from __future__ import annotations

import binascii
import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import VerifyError
from .checker import verify_event
from .dsse import b64d, envelope_parts
from .keys import VerifyKey

__all__ = ["ALWAYS_SIGNED", "Finding", "Tally", "audit", "guest_event"]

#: the host's attributes, and the names under which a signed guest event's own values of them are kept
KEPT_AS = {n: "guest" + n for n in ("hostid", "hostreceivedat", "sequence", "hostpeer")}
#: attributes the host always lists in ``signedextattrs`` when it writes them
ALWAYS_SIGNED = (*KEPT_AS, "guestdssematerial", "guestsignedextattrs", *KEPT_AS.values())
_MATERIAL = ("dssematerial", "signedextattrs")


@dataclass(frozen=True, slots=True)
class Finding:
    #: a problem (verification fails) or a note
    problem: bool
    code: str
    message: str


def guest_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as its guest signed it: the host's attributes taken away, the guest's own values of them and its
    material back in place."""
    guest = {k: v for k, v in event.items() if k not in ALWAYS_SIGNED and k not in _MATERIAL}
    guest.update((name, event[kept]) for name, kept in KEPT_AS.items() if kept in event)
    guest["dssematerial"] = event["guestdssematerial"]
    if (names := event.get("guestsignedextattrs")) is not None:
        guest["signedextattrs"] = names
    return guest


def _guest_keyids(material: Any) -> list[str] | None:
    try:
        return [keyid for keyid, _sig in envelope_parts(b64d(material, "guestdssematerial"))[2]]
    except (VerifyError, binascii.Error, ValueError):
        return None


_BIG = 1 << 53


def _as_number(text: str) -> float | None:
    """The number a guest's JCS signed, when ``text`` is digits the receiver writes as a string (beyond
    ±(2^53-1), no leading zero), else None. A double, as JCS reads every JSON number: the float the guest sent
    comes back exactly, and an integer beyond 2^53 as the double its signer hashed."""
    digits = text[1:] if text.startswith("-") else text
    if not (16 <= len(digits) <= 400 and digits.isascii() and digits.isdigit() and digits[0] != "0"):
        return None
    if int(digits) < _BIG or (n := float(digits)) >= 1e21:  # from 10^21 on the receiver keeps the float
        return None
    return -n if text.startswith("-") else n


#: digit strings whose every combination is tried, at most; up to _MAX_TRIED, each alone and all but each; beyond
#: that, only all of them together
_MAX_COMBINED = 6
_MAX_TRIED = 12


def _numbers_back(value: Any, pick: Callable[[int], bool], seen: list[int]) -> Any:
    """``value`` (data) with such strings read back as the numbers the guest sent: those whose position (in
    document order, counted in ``seen``) ``pick`` takes."""
    if isinstance(value, str):
        number = _as_number(value)
        if number is None:
            return value
        seen[0] += 1
        return number if pick(seen[0] - 1) else value
    if isinstance(value, Mapping):
        return {k: _numbers_back(v, pick, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_back(v, pick, seen) for v in value]
    return value


def _in_mask(mask: int, i: int) -> bool:
    return bool(mask >> i & 1)


def _read_back(data: Any) -> list[Any]:
    """The forms of ``data`` the guest may have signed, when it holds digit strings the receiver may have written
    for numbers (a guest may also send big numbers as strings itself): all read back first; then, for a few, every
    combination; for more, each alone and all but each."""
    seen = [0]
    every = _numbers_back(data, lambda _i: True, seen)
    n = seen[0]
    if n == 0:
        return []
    forms = [every]
    if 1 < n <= _MAX_COMBINED:
        for mask in range((1 << n) - 2, 0, -1):  # every proper, non-empty subset read back
            forms.append(_numbers_back(data, functools.partial(_in_mask, mask), [0]))
    elif n <= _MAX_TRIED:
        for i in range(n):
            forms.append(_numbers_back(data, functools.partial(operator.eq, i), [0]))
            if n > 2:
                forms.append(_numbers_back(data, functools.partial(operator.ne, i), [0]))
    return forms


def _check_guest(event: Mapping[str, Any], guest_keys: Mapping[str, VerifyKey]) -> Finding | None:
    keyids = _guest_keyids(event["guestdssematerial"])
    if keyids is None:  # no one's signature: given guest keys to check it with, it fails the check
        if guest_keys:
            return Finding(True, "guest-signature", "guest signature: its material is not a DSSE envelope")
        return Finding(False, "guest-unchecked", "guest signature not checked: its material is not a DSSE envelope")
    if not any(k in guest_keys or (not k and guest_keys) for k in keyids):  # no key id: every key is tried
        named = ", ".join(k[:16] or "(no key id)" for k in keyids) or "none"
        return Finding(False, "guest-unchecked", f"guest signature not checked: no guest key for it (signed by: "
                                                 f"{named}; give its public key with --guest-pub)")
    names = event.get("guestsignedextattrs")
    signed = names.split(",") if isinstance(names, str) else []
    # a relay's signature (over its own guest's material, which the next host does not carry on): by design
    relayed = [n for n in ALWAYS_SIGNED if n not in KEPT_AS and n in signed]
    if relayed:
        return Finding(False, "guest-unchecked", f"guest signature not checked: the guest signed "
                                                 f"{', '.join(relayed)}, which the host drops (a relay's "
                                                 "signature over its own guest's)")
    # a host attribute the guest signed, whose value the host keeps: without it the signature cannot hold
    unkept = [n for n in KEPT_AS if n in signed and KEPT_AS[n] not in event]
    if unkept:
        return Finding(True, "guest-signature", "guest signature: the guest signed " + ", ".join(unkept) +
                       ", but the event lacks its value" + ("s" if len(unkept) > 1 else "") + " (" +
                       ", ".join(KEPT_AS[n] for n in unkept) + ")")
    guest = guest_event(event)
    try:
        verify_event(guest, guest_keys)
    except VerifyError as exc:
        # the receiver writes integers beyond 2^53 (and integral floats from 2^53 on) as their digits in a
        # string (docs/protocol.md): the guest signed the numbers, so check that form too
        for data in _read_back(event.get("data")) if "modified after signing" in str(exc) else ():
            try:
                verify_event({**guest, "data": data}, guest_keys)
                return None
            except VerifyError:
                continue
        return Finding(True, "guest-signature", f"guest signature: {exc}")
    return None


def audit(event: Mapping[str, Any], covered: Mapping[str, Any],
          guest_keys: Mapping[str, VerifyKey] | None = None) -> list[Finding]:
    """What to say of ``event``, whose own signature verified and covers ``covered`` (:func:`verify_event`);
    ``guest_keys`` check guest signatures."""
    found: list[Finding] = []
    for name in event:
        if name in covered or name in _MATERIAL:
            continue
        if name in ALWAYS_SIGNED:
            found.append(Finding(True, "unsigned-stamp", f"{name} is on the event but not signed (not in "
                                                         "signedextattrs): it was added after signing"))
        else:
            found.append(Finding(False, "unsigned", f"attribute {name!r} is not covered by the signature"))
    if "guestdssematerial" in covered:
        guest = _check_guest(event, guest_keys or {})
        if guest is None:  # said too, so that a check that was made is told from one that was not
            guest = Finding(False, "guest-checked", "guest signature verified with a --guest-pub key")
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
