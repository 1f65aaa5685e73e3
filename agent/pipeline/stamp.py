"""Host stamp and signature: a Reading (or a guest's event) becomes a signed Event.

This is the hot path. Per event it hashes only what changes (id, data, receive
time, sequence); digests and JSON of constant or repeating strings (source,
type, subject, the second-resolution time) come from small caches, and the
constant parts of the event JSON and of the DSSE envelope are built once per
route. The canonical (JCS) data bytes are hashed and spliced into the event
JSON as they are, so the bytes that were hashed are the bytes that are emitted.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from binascii import b2a_base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import orjson

from .. import _native
from ..codec.canonical import prepare
from ..model import Event, Reading, escape_text
from ..signing.dsse import pae
from ..signing.event import PAYLOAD_TYPE, attr_text
from ..signing.keys import SigningKey
from .guest import GUEST_ATTRIBUTES, HOST_ATTRIBUTES, finish_guests, prepare_guests
from .sequence import SequenceStore

__all__ = ["GUEST_ATTRIBUTES", "HOST_ATTRIBUTES", "Stamper", "format_time"]

_SIGNED = ",".join(HOST_ATTRIBUTES)

_sha = hashlib.sha256
_EMPTY = _sha(b"").digest()
_H_SPEC = _sha(b"1.0").digest()
_H_JSON = _sha(b"application/json").digest()
_H_NAMES = [_sha(n.encode()).digest() for n in HOST_ATTRIBUTES]
_PT = PAYLOAD_TYPE.encode()
#: longer attribute values are hashed every time, not kept (a cache of 16,384 one-megabyte values is 16 GiB)
_MAX_CACHED_TEXT = 256
#: what a URI's host part (RFC 3986 reg-name) holds as it is, besides letters, digits and -._~
_REG_NAME = "!$&'()*+,;="
#: the DSSE PAE of a 32-byte payload up to the payload itself
_PAE_HEAD = pae(_PT, bytes(32))[:-32]
#: what closes the DSSE envelope after the signature
_ENV_TAIL = b'"}]}'


def format_time(ts: float) -> str:
    """RFC 3339 UTC with microseconds: ``2026-11-22T01:51:35.123456Z``."""
    sec = int(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{int((ts - sec) * 1e6):06d}Z"


class _Clock:
    """Formats timestamps, re-rendering the seconds part only when it changes."""

    __slots__ = ("_hsec", "_prefix", "_sec")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = b""
        self._hsec = b""

    def render(self, ts: float) -> tuple[bytes, bytes]:
        """``(time with microseconds, digest of the seconds-Z form)``, both as bytes."""
        sec = int(ts)
        if sec != self._sec:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
            self._hsec = _sha(self._prefix + b"Z").digest()
            self._sec = sec
        return b"%b.%06dZ" % (self._prefix, int((ts - sec) * 1e6)), self._hsec


@dataclass(frozen=True, slots=True)
class _Route:
    """What is constant for every event of one (domain, probe, kind)."""

    source: str
    type: str
    h_source: bytes
    h_type: bytes
    #: the event JSON up to the opening quote of ``id``
    head: bytes
    #: the id before the sequence: random per source, so ids are unique across sources too
    id_prefix: bytes


class Stamper:
    """Stamps, signs and serializes. One per agent; not thread-safe."""

    def __init__(
        self,
        key: SigningKey,
        host_id: str,
        sequences: SequenceStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.host_id = host_id
        self._seq = sequences
        self._now = clock
        self._recv_clock = _Clock()
        self._time_clock = _Clock()
        self._h_host = _sha(host_id.encode()).digest()
        self._id_prefixes: dict[str, bytes] = {}
        self._routes: dict[tuple[str, str, str], _Route] = {}
        self._subjects: dict[str, tuple[bytes, bytes]] = {}
        self._texts: dict[str, bytes] = {}
        #: guest event plans by attribute names (see :mod:`.guest`); None: the generic path
        self._shapes: dict[tuple[str, ...], Any] = {}
        self._sign = key.sign
        # the constant parts of the DSSE envelope, fields in the order the specification shows them
        self._env_head = b'{"payloadType":' + orjson.dumps(PAYLOAD_TYPE) + b',"payload":"'
        self._env_mid = b'","signatures":[{"keyid":' + orjson.dumps(key.keyid) + b',"sig":"'
        #: the native batch signer (libsodium, without the GIL) when it was built; same bytes as the Python path
        self._native = _native.Signer(key.seed()) if _native.Signer is not None else None
        #: the native planned guest path when it was built (see :mod:`.guest`); same bytes as the Python path
        self._restamp = (_native.Restamper(self._shapes, self._texts, sequences.next).stamp
                         if _native.Restamper is not None else None)

    def source_for(self, probe: str) -> str:
        """``hoststamp://HOST/PROBE``: the host id percent-encoded where a URI's host part cannot hold it as it
        is (``/``, ``?``, ``#``, spaces, non-ASCII), so ``source`` stays a URI reference naming host and probe."""
        return f"hoststamp://{quote(self.host_id, safe=_REG_NAME)}/{probe}"

    def _route(self, reading: Reading) -> _Route:
        key = (reading.domain, reading.probe, reading.kind)
        route = self._routes.get(key)
        if route is None:
            source = self.source_for(reading.probe)
            etype = reading.type
            head = b"".join(
                (
                    b'{"specversion":"1.0","source":',
                    orjson.dumps(source),
                    b',"type":',
                    orjson.dumps(etype),
                    b',"datacontenttype":"application/json","hostid":',
                    orjson.dumps(self.host_id),
                    b',"signedextattrs":"',
                    _SIGNED.encode(),
                    b'","id":"',
                )
            )
            # routes of one source (a probe's kinds) share its prefix, as they share its sequence
            prefix = self._id_prefixes.get(source)
            if prefix is None:
                prefix = self._id_prefixes[source] = (os.urandom(6).hex() + "-").encode()
            route = _Route(source, etype, _sha(source.encode()).digest(), _sha(etype.encode()).digest(), head, prefix)
            self._routes[key] = route
        return route

    def _subject(self, subject: str) -> tuple[bytes, bytes]:
        """(JSON string, digest) of a subject; subjects repeat every round, so they are cached."""
        hit = self._subjects.get(subject)
        if hit is None:
            if len(self._subjects) > 16384:
                self._subjects.clear()
            text = escape_text(subject, attribute=True)  # a CloudEvents attribute: no control character
            hit = self._subjects[subject] = (orjson.dumps(text), _sha(text.encode()).digest())
        return hit

    def _hash_text(self, value: Any) -> bytes:
        """Digest of an attribute value's text, cached for strings: sources, types and names repeat."""
        if type(value) is not str:
            return _sha(attr_text(value).encode()).digest()
        d = self._texts.get(value)
        if d is None:
            d = _sha(value.encode()).digest()
            if len(value) <= _MAX_CACHED_TEXT:
                if len(self._texts) > 16384:
                    self._texts.clear()
                self._texts[value] = d
        return d

    def _material(self, digest: bytes) -> bytes:
        """``dssematerial`` (base64 of the DSSE envelope) for a digest, as ASCII bytes."""
        if self._native is not None and len(digest) == 32:
            return self._native.materials(_PAE_HEAD, self._env_head, self._env_mid, _ENV_TAIL, (digest,))[0]
        return self._py_material(digest)

    def _materials(self, digests: Sequence[bytes]) -> list[bytes]:
        """:meth:`_material` of each 32-byte digest; natively a whole batch with the GIL released, so another
        thread may call this while the event loop goes on."""
        if self._native is not None:
            return self._native.materials(_PAE_HEAD, self._env_head, self._env_mid, _ENV_TAIL, digests)
        return [self._py_material(d) for d in digests]

    def _py_material(self, digest: bytes) -> bytes:
        sig = self._sign(_PAE_HEAD + digest if len(digest) == 32 else pae(_PT, digest))
        env = b"".join((self._env_head, b2a_base64(digest, newline=False), self._env_mid,
                        b2a_base64(sig, newline=False), _ENV_TAIL))
        return b2a_base64(env, newline=False)

    def stamp(self, reading: Reading) -> Event:
        """A probe reading as a signed event."""
        route = self._route(reading)
        # what may refuse the reading comes before its sequence number: a refused reading leaves no gap
        _data, data = prepare(reading.data())
        subj_json, h_subj = self._subject(reading.subject)
        t, h_t = self._time_clock.render(reading.time)
        seq = self._seq.next(route.source)
        seq_b = b"%d" % seq
        ev_id = route.id_prefix + seq_b
        recv, _ = self._recv_clock.render(self._now())
        digest = _sha(
            b"".join(
                (
                    _sha(ev_id).digest(),
                    route.h_source,
                    _H_SPEC,
                    route.h_type,
                    _H_JSON,
                    _EMPTY,  # dataschema
                    h_subj,
                    h_t,
                    _sha(data).digest(),
                    _H_NAMES[0],
                    self._h_host,
                    _H_NAMES[1],
                    _sha(recv).digest(),
                    _H_NAMES[2],
                    _sha(seq_b).digest(),
                )
            )
        ).digest()
        body = b"".join(
            (
                route.head,
                ev_id,
                b'","subject":',
                subj_json,
                b',"time":"',
                t,
                b'","hostreceivedat":"',
                recv,
                b'","sequence":"',
                seq_b,
                b'","dssematerial":"',
                self._material(digest),
                b'","data":',
                data,
                b"}",
            )
        )
        return Event(ev_id.decode(), route.source, route.type, seq, body)

    def stamp_or_error(self, reading: Reading) -> tuple[Event, str | None]:
        """A reading as a signed event, whatever it holds, and what was wrong with it (None: nothing).

        Text that is not valid Unicode (a name the kernel gave in bytes that are not UTF-8) is signed escaped
        (:meth:`~agent.model.Reading.escaped`): that is still the reading. A reading that JSON cannot carry even
        then (a NaN, an object that is not JSON) becomes an error reading of the same probe and subject, with
        what was wrong."""
        try:
            return self.stamp(reading), None
        except (ValueError, TypeError, OverflowError) as exc:
            problem: Exception = exc
        clean = reading.escaped()
        if clean != reading:
            try:
                return self.stamp(clean), None
            except (ValueError, TypeError, OverflowError) as exc:
                problem = exc
        if not math.isfinite(clean.time) or not 0 <= clean.time < 253402300800:  # no time RFC 3339 can write
            clean = replace(clean, time=time.time())
        error = escape_text(f"unserializable reading: {problem}")
        return self.stamp(replace(clean, output={}, error=error)), error

    def stamp_guests(self, events: Sequence[Mapping[str, Any]], hostpeer: str, *, received: float | None = None,
                     sequences: Sequence[int] | None = None, owned: bool = False) -> list[Event | Exception]:
        """Guests' events re-stamped and signed by the host: an Event or the refusing error for each (see
        :mod:`.guest`; the arguments are :func:`~.guest.prepare_guests`'s)."""
        prepared = prepare_guests(self, events, hostpeer, received=received, sequences=sequences, owned=owned)
        return finish_guests(prepared, self._materials(prepared.digests))

    def stamp_guest(self, event: Mapping[str, Any], hostpeer: str) -> Event:
        """One guest event; raises ValueError, TypeError or VerifyError when it cannot be stamped."""
        (result,) = self.stamp_guests((event,), hostpeer)
        if isinstance(result, Exception):
            raise result
        return result
