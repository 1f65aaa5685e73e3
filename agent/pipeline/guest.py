"""Guest events re-stamped and signed by the host, a batch at a time.

A guest's event keeps its own attributes; the host overwrites ``hostid``,
``hostreceivedat``, ``sequence`` and ``hostpeer``, moves the guest's signature
material to ``guestdssematerial`` / ``guestsignedextattrs``, and signs every
extension attribute of the result. A guest that signed its event may have
signed its own values of the host's attributes (another hoststamp agent signs
its ``hostid``, ``hostreceivedat`` and ``sequence``): those values are kept,
in the guest's place among its attributes, as ``guesthostid``,
``guesthostreceivedat``, ``guestsequence`` and ``guesthostpeer``, so that the
guest's signature can still be checked on the host's event.

This is the receiver's hot path, so the work that depends only on an event's
*shape* (its attribute names, in order) is planned once per shape and cached:
which names to drop, the signed extension list, and the digests of the names. What depends on the batch (the
receive time, the peer) is hashed once per batch. Per event there remain the
digests of what is new (id, data, sequence, the guest's signature), the JCS of
the data, the signature, and one JSON encoding; the data and the
``dssematerial`` are spliced in as bytes.

Events of a shape the plan does not cover (null attributes, string data,
``data_base64``, values of unusual types) take :func:`_generic`, which spells
the rules out one by one. Both produce the same event: a property test holds
them to it.

When the native part is built, :class:`agent._native.restamp.Restamper` takes
the planned path of each event first, reading the event without changing it;
what it leaves (a shape not planned yet, floats or big integers in the data, a
time with an offset, ...) takes the Python paths, before anything about the
event has changed. Its bytes are the Python planned path's: tests compare them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .. import _native
from ..codec.canonical import prepare
from ..model import Event
from ..signing.audit import KEPT_AS
from ..signing.dsse import strict_base64
from ..signing.event import NOT_EXTENSIONS, attr_text, is_json_media, material, normalize_time

if TYPE_CHECKING:
    from .stamp import Stamper

__all__ = ["GUEST_ATTRIBUTES", "HOST_ATTRIBUTES", "Prepared", "finish_guests", "prepare_guests"]

#: what the host stamps on every event, always signed
HOST_ATTRIBUTES = ("hostid", "hostreceivedat", "sequence")
#: what the host adds to events it received from a guest
GUEST_ATTRIBUTES = ("hostpeer",)
_OURS = HOST_ATTRIBUTES + GUEST_ATTRIBUTES
#: names a guest may send that the host replaces or moves (those it writes itself are the host's alone)
_REPLACED = frozenset((*_OURS, *KEPT_AS.values(), "guestdssematerial", "guestsignedextattrs", "dssematerial",
                       "signedextattrs"))
#: moved values that are new every event: not worth a slot in the digest cache
_UNCACHED = frozenset(("guestdssematerial", "guesthostreceivedat", "guestsequence"))
#: the host's own names in the order they open ``signedextattrs``
_FIRST = tuple(sorted(_OURS))

_sha = hashlib.sha256
_EMPTY = _sha(b"").digest()
#: shapes remembered at most (then the memory starts again: guests that invent attribute names each event only
#: cost their own planning)
MAX_SHAPES = 1024
#: a shape is remembered only with this many names at most, this long in all (a hostile frame's 80,000 names
#: would otherwise be kept for good)
MAX_SHAPE_NAMES = 64
MAX_SHAPE_CHARS = 2048


@dataclass(frozen=True, slots=True)
class _Shape:
    """What follows from an event's attribute names alone."""

    #: names to remove before stamping (the guest's host attributes and signature material)
    drop: tuple[str, ...]
    #: of those, the guest's host attributes kept under ``guest*`` names (a signed event's): name -> new name
    kept: dict[str, str]
    #: the guest signed it: ``dssematerial`` (and maybe ``signedextattrs``) move to ``guest*``
    signed: bool
    signed_ext: bool
    #: the guest's extension names after the host's, sorted, with the digest of each name
    rest: tuple[tuple[str, bytes], ...]
    #: the ``signedextattrs`` member and the start of ``dssematerial``'s, the JSON that follows the host's
    #: attributes up to the signature
    sig_json: bytes
    has_data: bool
    #: attributes whose digest may be cached (their values repeat from event to event)
    dct: bool
    schema: bool
    subject: bool
    time: bool
    #: the plan as :class:`~agent._native.restamp.Restamper` reads it (None: the native part leaves the shape)
    native: _NativePlan | None


#: the attributes whose positions the native plan gives, in its order
_NATIVE_SPECIAL = ("id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time", "data",
                   "dssematerial", "signedextattrs")


_NativePlan = tuple[tuple[bytes | None, ...], bytes, tuple[tuple[bytes, int, bool], ...], bytes]


def _native_plan(shape: tuple[str, ...], drop: tuple[str, ...], kept: dict[str, str],
                 rest: tuple[tuple[str, bytes], ...], sig_json: bytes) -> _NativePlan | None:
    """Per name in order, its JSON key (None: not written); the position + 1 of each special attribute; per
    extension name after the host's, its digest, the position of its value and whether that is cached; and the
    JSON after the host's attributes."""
    if len(shape) > MAX_SHAPE_NAMES:
        return None
    at = {n: i for i, n in enumerate(shape)}
    moved = {"guestdssematerial": "dssematerial", "guestsignedextattrs": "signedextattrs"}
    moved.update((new, old) for old, new in kept.items())  # a signed event's own host attributes, renamed
    try:
        keys = tuple(orjson.dumps(kept[n]) + b":" if n in kept  # written where they were
                     else None if n in drop or n == "data" else orjson.dumps(n) + b":" for n in shape)
    except orjson.JSONEncodeError:  # a name that is not valid Unicode: orjson refuses it on the Python path too
        return None
    special = bytes(at.get(n, -1) + 1 for n in _NATIVE_SPECIAL)
    return keys, special, tuple((h, at[moved.get(n, n)], n not in _UNCACHED) for n, h in rest), sig_json


def _plan(shape: tuple[str, ...]) -> _Shape | None:
    """The plan for events with these attribute names, or None when only the generic path may stamp them."""
    names = set(shape)
    if "data_base64" in names:
        return None
    signed = "dssematerial" in names
    signed_ext = signed and "signedextattrs" in names
    own = {n for n in names if n not in NOT_EXTENSIONS and n not in _REPLACED}
    kept: dict[str, str] = {}
    if signed:
        own.add("guestdssematerial")
        if signed_ext:
            own.add("guestsignedextattrs")
        kept = {n: KEPT_AS[n] for n in shape if n in KEPT_AS}
        own.update(kept.values())
    rest = tuple(sorted(own))
    drop = tuple(n for n in shape if n in _REPLACED)
    hashed = tuple((n, _sha(n.encode()).digest()) for n in rest)
    sig_json = b"".join((b',"signedextattrs":', orjson.dumps(",".join(_FIRST + rest)), b',"dssematerial":"'))
    return _Shape(
        drop=drop,
        kept=kept,
        signed=signed,
        signed_ext=signed_ext,
        rest=hashed,
        sig_json=sig_json,
        has_data="data" in names,
        dct="datacontenttype" in names,
        schema="dataschema" in names,
        subject="subject" in names,
        time="time" in names,
        native=_native_plan(shape, drop, kept, hashed, sig_json) if _native.Restamper is not None else None,
    )


class _Fallback(Exception):
    """This event needs the generic path."""


#: an event stamped but for its signature: (digest, JSON before the signature, JSON after it, id, source, type,
#: sequence)
_Stamped = tuple[bytes, bytes, bytes, str, str, Any, int]


@dataclass(slots=True)
class Prepared:
    """A batch stamped but for its signatures: :func:`prepare_guests` makes it, :func:`finish_guests` ends it
    with the ``dssematerial`` of each of :attr:`digests` (which another thread may make meanwhile)."""

    #: per event: None (waiting for its signature), or its result when the generic path or a refusal settled it
    out: list[Event | Exception | None]
    #: the events waiting for a signature: (slot in out, (digest, JSON before the signature, JSON after it, id,
    #: source, type, sequence))
    ready: list[tuple[int, _Stamped]]
    #: the digest to sign of each, in the same order
    digests: list[bytes]


def prepare_guests(
    st: Stamper,
    events: Sequence[Mapping[str, Any]],
    hostpeer: str,
    *,
    received: float | None = None,
    sequences: Sequence[int] | None = None,
    owned: bool = False,
) -> Prepared:
    """Stamp ``events`` from ``hostpeer`` up to their signatures: numbers, digests, the generic path's events.

    ``received`` (default: now) is the receive time of the whole batch; ``sequences``, when given, are the
    sequence numbers to use (a worker process stamping numbers its parent chose), else each source's next.
    ``owned``: the events are the caller's to give away (parsed for this call alone), so they are changed in
    place rather than copied first.
    """
    recv_b = st._recv_clock.render(st._now() if received is None else received)[0]
    recv = recv_b.decode()
    hash_text = st._hash_text
    texts = st._texts
    # the host's attributes, but for the sequence, are the same for the whole batch
    head = b"".join(
        (
            _H_NAME["hostid"], st._h_host,
            _H_NAME["hostpeer"], hash_text(hostpeer),
            _H_NAME["hostreceivedat"], _sha(recv_b).digest(),
            _H_NAME["sequence"],
        )
    )
    # the host's attributes as JSON members, written after the guest's
    host_json = b"".join((b',"hostid":', orjson.dumps(st.host_id), b',"hostreceivedat":"', recv_b,
                          b'","hostpeer":', orjson.dumps(hostpeer)))
    shapes = st._shapes
    next_seq = st._seq.next
    native = st._restamp
    out: list[Event | Exception | None] = []
    #: signed on the planned path, waiting for their signatures, and the digest of each
    ready: list[tuple[int, _Stamped]] = []
    digests: list[bytes] = []
    ev: Any
    for i, ev in enumerate(events):
        if native is not None and (sequences is None or type(sequences[i]) is int):
            try:
                got = native(ev, None if sequences is None else sequences[i], head, host_json)
            except Exception as exc:  # taking the sequence number failed, or memory
                out.append(_refusal(exc))
                continue
            if got is not None:
                ready.append((len(out), got))
                digests.append(got[0])
                out.append(None)
                continue
        try:
            key = tuple(ev)
            shape = shapes.get(key, False)
            if shape is False:
                shape = _plan(key)
                if len(key) <= MAX_SHAPE_NAMES and sum(map(len, key)) <= MAX_SHAPE_CHARS:
                    if len(shapes) >= MAX_SHAPES:
                        shapes.clear()
                    shapes[key] = shape
            # everything that sends an event to the generic path is decided before anything is changed
            if shape is None or None in ev.values():
                raise _Fallback
            source = ev["source"]
            ev_id = ev["id"]
            if type(source) is not str or type(ev_id) is not str or (shape.time and type(ev["time"]) is not str):
                raise _Fallback
            gmat = gsig = None
            if shape.signed:
                gmat = ev["dssematerial"]
                gsig = ev["signedextattrs"] if shape.signed_ext else None
                if type(gmat) is not str or not gmat or (shape.signed_ext and (type(gsig) is not str or not gsig)):
                    raise _Fallback
            if shape.has_data and type(ev["data"]) is str:
                raise _Fallback
            if not owned:
                ev = dict(ev)
            raw = h_data = None
            if shape.has_data:
                value, raw = prepare(ev.pop("data"))
                # a number JSON cannot carry exactly became a string: hashed as the verifier hashes string data
                h_data = _sha(value.encode() if type(value) is str and not is_json_media(
                    ev.get("datacontenttype")) else raw).digest()
            # the digests: CloudEvents context attributes first, cached where values repeat
            parts = [
                _sha(ev_id.encode()).digest(),
                texts.get(source) or hash_text(source),
                texts.get(ev["specversion"]) or hash_text(ev["specversion"]),
                texts.get(ev["type"]) or hash_text(ev["type"]),
                (texts.get(ev["datacontenttype"]) or hash_text(ev["datacontenttype"])) if shape.dct else _EMPTY,
                (texts.get(ev["dataschema"]) or hash_text(ev["dataschema"])) if shape.schema else _EMPTY,
                (texts.get(ev["subject"]) or hash_text(ev["subject"])) if shape.subject else _EMPTY,
                hash_text(normalize_time(ev["time"])) if shape.time else _EMPTY,
                _EMPTY if h_data is None else h_data,
                head,
            ]
            if shape.kept:  # renamed where they stand: the order of the guest's attributes is kept
                kept = shape.kept
                ev = {kept.get(k, k): v for k, v in ev.items() if k in kept or k not in _REPLACED}
            else:
                for name in shape.drop:
                    del ev[name]
            if gmat is not None:
                ev["guestdssematerial"] = gmat
                if gsig is not None:
                    ev["guestsignedextattrs"] = gsig
            ext = []
            for name, h_name in shape.rest:
                v = ev[name]
                ext.append(h_name)
                if name in _UNCACHED:  # new every event: not worth a cache slot
                    ext.append(_sha(attr_text(v).encode()).digest())
                else:
                    ext.append((texts.get(v) if type(v) is str else None) or hash_text(v))
            guest_json = orjson.dumps(ev)[:-1]
            # all that could refuse the event is behind: only now does it take a sequence number
            seq = next_seq(source) if sequences is None else sequences[i]
            seq_b = b"%d" % seq
            parts.append(_sha(seq_b).digest())
            parts += ext
            digest = _sha(b"".join(parts)).digest()
            body_head = b"".join((guest_json, host_json, b',"sequence":"', seq_b, b'"', shape.sig_json))
            ready.append((len(out), (digest, body_head, b'"}' if raw is None else b'","data":' + raw + b"}", ev_id,
                                     source, ev["type"], seq)))
            digests.append(digest)
            out.append(None)
        except _Fallback:
            try:
                out.append(_generic(st, ev, hostpeer, recv, None if sequences is None else sequences[i]))
            except Exception as exc:
                out.append(_refusal(exc))
        except Exception as exc:  # e.g. VerifyError: a time of a date that does not exist; RecursionError
            out.append(_refusal(exc))
    return Prepared(out, ready, digests)


def finish_guests(prepared: Prepared, mats: Sequence[bytes]) -> list[Event | Exception]:
    """The results of a prepared batch, given the ``dssematerial`` of each of its digests: the signature is
    spliced into each event's JSON."""
    out = prepared.out
    for (slot, (_digest, head, tail, ev_id, source, etype, seq)), mat in zip(prepared.ready, mats, strict=True):
        out[slot] = Event(ev_id, source, etype, seq, head + mat + tail)
    return out  # type: ignore[return-value]


def _refusal(exc: Exception) -> Exception:
    """``exc`` as a result to keep: without its traceback, which would hold the whole batch in memory for as
    long as the answer is remembered (the receiver's duplicate window)."""
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None
    return exc


_H_NAME = {n: _sha(n.encode()).digest() for n in _OURS}


def _generic(st: Stamper, event: Mapping[str, Any], hostpeer: str, recv: str, seq: int | None) -> Event:
    """Every rule spelled out; for the events the planned path leaves alone."""
    # JSON format: an attribute whose value is null is treated as absent
    ev = {k: v for k, v in event.items() if v is not None or k == "data"}
    guest_mat = ev.pop("dssematerial", None)
    guest_signed = ev.pop("signedextattrs", None)
    kept = {KEPT_AS[n]: ev[n] for n in _OURS if n in ev} if guest_mat else {}
    for name in _REPLACED:
        ev.pop(name, None)
    ev.update(kept)
    if guest_mat:
        ev["guestdssematerial"] = guest_mat
        if guest_signed:
            ev["guestsignedextattrs"] = guest_signed
    source = str(ev.get("source", ""))
    # what refuses an event that passed the receiver's checks, found before it takes a sequence number: a time
    # of a date that does not exist, an attribute of a type CloudEvents does not have
    if "time" in ev:
        normalize_time(attr_text(ev["time"]))
    for name, v in ev.items():
        if name != "data":
            attr_text(v)
    if "data_base64" in ev and not (isinstance(ev["data_base64"], str) and strict_base64(ev["data_base64"])):
        raise ValueError("data_base64 is not base64 (RFC 4648: the standard alphabet, padded)")
    if seq is None:
        seq = st._seq.next(source)
    ev["hostid"] = st.host_id
    ev["hostreceivedat"] = recv
    ev["sequence"] = str(seq)
    ev["hostpeer"] = hostpeer
    data_raw: bytes | None = None
    if "data" in ev and not isinstance(ev["data"], str):
        ev["data"], data_raw = prepare(ev["data"])
    ext = sorted((k for k in ev if k not in NOT_EXTENSIONS), key=lambda k: (k not in _OURS, k))
    ev["signedextattrs"] = ",".join(ext)
    # string data (also a number JSON cannot carry exactly, now a string) is hashed by the verifier's rule
    digest = material(ev, ext, None if isinstance(ev.get("data"), str) else data_raw, hash_text=st._hash_text)
    ev["dssematerial"] = st._material(digest).decode("ascii")
    if data_raw is not None:
        del ev["data"]
        body = orjson.dumps(ev)[:-1] + b',"data":' + data_raw + b"}"
    else:
        body = orjson.dumps(ev)
    return Event(str(ev.get("id", "")), source, str(ev.get("type", "")), seq, body)
