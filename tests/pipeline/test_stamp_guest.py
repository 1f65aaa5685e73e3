"""A guest's event as the host stamps it: nulls are absent, whatever the guest put in host attributes is replaced."""

from __future__ import annotations

from typing import Any

import orjson

from agent.pipeline import SequenceStore, Stamper
from agent.signing.event import verify_event
from agent.signing.keys import SigningKey


def _guest(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"specversion": "1.0", "id": "g-1", "source": "guest://vm1/app", "type": "io.example.v1",
                          "data": {"a": 1}}
    ev.update(over)
    return ev


def test_null_attributes_are_treated_as_absent() -> None:
    key = SigningKey.generate()
    stamper = Stamper(key, "host-1", SequenceStore(None))
    ev = stamper.stamp_guest(_guest(subject=None, time=None, traceparent=None, kept="yes"), "vsock:3")
    doc = orjson.loads(ev.body)
    assert not {"subject", "time", "traceparent"} & set(doc)
    assert doc["signedextattrs"] == "hostid,hostpeer,hostreceivedat,sequence,kept"
    assert verify_event(doc, {key.keyid: key.verify_key()})["kept"] == "yes"


def test_null_data_stays_as_sent() -> None:
    key = SigningKey.generate()
    doc = orjson.loads(Stamper(key, "host-1", SequenceStore(None)).stamp_guest(_guest(data=None), "vsock:3").body)
    assert "data" in doc and doc["data"] is None
    verify_event(doc, {key.keyid: key.verify_key()})


def test_host_attributes_of_any_type_are_replaced() -> None:
    key = SigningKey.generate()
    stamper = Stamper(key, "host-1", SequenceStore(None))
    forged = _guest(hostid=5, hostreceivedat=None, sequence=7, hostpeer={"cid": 3}, guestsignedextattrs=[1])
    doc = orjson.loads(stamper.stamp_guest(forged, "unix:uid=0,pid=1").body)
    assert (doc["hostid"], doc["sequence"], doc["hostpeer"]) == ("host-1", "1", "unix:uid=0,pid=1")
    assert isinstance(doc["hostreceivedat"], str) and "guestsignedextattrs" not in doc
    verify_event(doc, {key.keyid: key.verify_key()})
