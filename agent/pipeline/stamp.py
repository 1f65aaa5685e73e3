"""Host stamp and signature: a Reading (or a guest's event) becomes a signed Event.

This is the hot path. Per event it hashes only what changes (id, subject, data,
receive time, sequence); digests of constant or slowly changing strings
(source, type, the second-resolution time) come from small caches. The event
JSON is the attribute object from orjson with the canonical data bytes spliced
in, so the bytes that were hashed are the bytes that are emitted.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ..codec.canonical import prepare
from ..model import Event, Reading
from ..signing.event import dssematerial, material
from ..signing.keys import SigningKey
from .sequence import SequenceStore

__all__ = ["HOST_ATTRIBUTES", "Stamper", "format_time"]

#: what the host stamps on every event, always signed
HOST_ATTRIBUTES = ("hostid", "hostreceivedat", "sequence")
GUEST_ATTRIBUTES = ("hostpeer",)
_SIGNED = ",".join(HOST_ATTRIBUTES)
_GUEST_SIGNED = ",".join((*HOST_ATTRIBUTES, *GUEST_ATTRIBUTES))

_sha = hashlib.sha256
_EMPTY = _sha(b"").digest()
_H_SPEC = _sha(b"1.0").digest()
_H_JSON = _sha(b"application/json").digest()
_H_NAMES = [_sha(n.encode()).digest() for n in HOST_ATTRIBUTES]


def format_time(ts: float) -> str:
    """RFC 3339 UTC with microseconds: ``2026-11-22T01:51:35.123456Z``."""
    sec = int(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{int((ts - sec) * 1e6):06d}Z"


class _Clock:
    """Formats timestamps, re-rendering the seconds part only when it changes."""

    __slots__ = ("_hsec", "_prefix", "_sec")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""
        self._hsec = b""

    def render(self, ts: float) -> tuple[str, bytes]:
        """``(time with microseconds, digest of the seconds-Z form)``."""
        sec = int(ts)
        if sec != self._sec:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._hsec = _sha((self._prefix + "Z").encode()).digest()
            self._sec = sec
        return f"{self._prefix}.{int((ts - sec) * 1e6):06d}Z", self._hsec


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
        self._id_prefix = os.urandom(6).hex() + "-"
        self._digests: dict[str, bytes] = {}
        self._sources: dict[str, str] = {}
        self._sign = key.sign

    def source_for(self, probe: str) -> str:
        src = self._sources.get(probe)
        if src is None:
            src = self._sources[probe] = f"hoststamp://{self.host_id}/{probe}"
        return src

    def _digest(self, text: str) -> bytes:
        d = self._digests.get(text)
        if d is None:
            if len(self._digests) > 4096:
                self._digests.clear()
            d = self._digests[text] = _sha(text.encode()).digest()
        return d

    def stamp(self, reading: Reading) -> Event:
        """A probe reading as a signed event."""
        source = self.source_for(reading.probe)
        seq = self._seq.next(source)
        seq_s = str(seq)
        ev_id = self._id_prefix + seq_s
        etype = reading.type
        recv, _ = self._recv_clock.render(self._now())
        t, h_t = self._time_clock.render(reading.time)
        _data, data = prepare(reading.data())
        subject = reading.subject
        digest = _sha(
            b"".join(
                (
                    _sha(ev_id.encode()).digest(),
                    self._digest(source),
                    _H_SPEC,
                    self._digest(etype),
                    _H_JSON,
                    _EMPTY,
                    self._digest(subject),
                    h_t,
                    _sha(data).digest(),
                    _H_NAMES[0],
                    self._h_host,
                    _H_NAMES[1],
                    _sha(recv.encode()).digest(),
                    _H_NAMES[2],
                    _sha(seq_s.encode()).digest(),
                )
            )
        ).digest()
        head = orjson.dumps(
            {
                "specversion": "1.0",
                "id": ev_id,
                "source": source,
                "type": etype,
                "subject": subject,
                "time": t,
                "datacontenttype": "application/json",
                "hostid": self.host_id,
                "hostreceivedat": recv,
                "sequence": seq_s,
                "signedextattrs": _SIGNED,
                "dssematerial": dssematerial(digest, self.key),
            }
        )
        return Event(ev_id, source, etype, seq, head[:-1] + b',"data":' + data + b"}")

    def stamp_guest(self, event: Mapping[str, Any], hostpeer: str) -> Event:
        """A guest's event, re-stamped and signed by the host.

        Host attributes the guest sent are overwritten. The guest's own
        signature material moves to ``guestdssematerial`` / ``guestsignedextattrs``
        so an auditor can check both signatures; every extension attribute of
        the result is signed by the host.
        """
        ev = dict(event)
        guest_mat = ev.pop("dssematerial", None)
        guest_signed = ev.pop("signedextattrs", None)
        for name in (*HOST_ATTRIBUTES, *GUEST_ATTRIBUTES, "guestdssematerial", "guestsignedextattrs"):
            ev.pop(name, None)
        if guest_mat:
            ev["guestdssematerial"] = guest_mat
            if guest_signed:
                ev["guestsignedextattrs"] = guest_signed
        source = str(ev.get("source", ""))
        seq = self._seq.next(source)
        ev["hostid"] = self.host_id
        ev["hostreceivedat"], _ = self._recv_clock.render(self._now())
        ev["sequence"] = str(seq)
        ev["hostpeer"] = hostpeer
        data_raw: bytes | None = None
        if "data" in ev and not isinstance(ev["data"], str):
            ev["data"], data_raw = prepare(ev["data"])
        ext = [k for k in ev if k not in _NOT_EXT]
        ext.sort(key=lambda k: (k not in HOST_ATTRIBUTES + GUEST_ATTRIBUTES, k))
        ev["signedextattrs"] = ",".join(ext)
        ev["dssematerial"] = dssematerial(material(ev, ext, data_raw), self.key)
        if data_raw is not None:
            data = ev.pop("data")
            del data
            head = orjson.dumps(ev)
            body = head[:-1] + b',"data":' + data_raw + b"}"
        else:
            body = orjson.dumps(ev)
        return Event(str(ev.get("id", "")), source, str(ev.get("type", "")), seq, body)


_NOT_EXT = frozenset(
    (
        "id",
        "source",
        "specversion",
        "type",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "data",
        "data_base64",
        "dssematerial",
        "signedextattrs",
    )
)
