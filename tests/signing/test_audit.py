"""``verify`` beyond an event's own signature: attributes it does not cover, and a guest's signature."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson

from agent.model import Reading
from agent.pipeline import SequenceStore, Stamper
from agent.signing.event import sign_event
from agent.signing.keys import SigningKey, VerifyKey, generate_keypair
from agent.signing.ndjson import MAX_PROBLEMS, verify_lines
from tests.archive.archive_helpers import make_event, write_archive
from tests.helpers import run_cli


def _keys(*keys: SigningKey) -> dict[str, VerifyKey]:
    return {k.keyid: k.verify_key() for k in keys}


def _host_events(key: SigningKey, n: int) -> list[dict[str, Any]]:
    stamper = Stamper(key, "h", SequenceStore(None))
    return [orjson.loads(stamper.stamp(Reading(probe="lve", subject="s", output={"i": i})).body) for i in range(n)]


def _lines(events: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) + b"\n" for e in events]


def _only_checked(summary: str) -> bool:
    """The only note is the one that says the guest signatures were checked."""
    notes = [line for line in summary.splitlines() if line.startswith("note: ")]
    return len(notes) == 1 and "guest signature verified with a --guest-pub key" in notes[0]


def _guest(guest: SigningKey | None, **over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"specversion": "1.0", "id": "g-1", "source": "guest://vm/app", "type": "io.example.v1",
                          "time": "2026-11-22T02:00:00Z", "data": {"n": 1}}
    names = [n for n in over if n not in ev]
    ev.update(over)
    if guest is not None:
        sign_event(ev, guest, names)
    return ev


def test_an_attribute_the_signature_does_not_cover_is_a_note_once_for_all_events() -> None:
    key = SigningKey.generate()
    events = _host_events(key, 3)
    for e in events:
        e["annotation"] = "added later"
    report = verify_lines(_lines(events), _keys(key), name="f")
    assert report.ok and report.verified == 3
    assert report.summary().splitlines() == [
        "note: f:1: attribute 'annotation' is not covered by the signature (3 events; the first here)",
        "OK: 3 events, 3 verified, 0 problems"]


def test_a_host_stamp_attribute_outside_the_signature_is_a_problem() -> None:
    """A host reading dressed up as a guest's: hostpeer added after signing."""
    key = SigningKey.generate()
    (event,) = _host_events(key, 1)
    event["hostpeer"] = "vsock:7"
    report = verify_lines(_lines([event]), _keys(key), name="f")
    assert not report.ok and report.verified == 0
    assert "hostpeer is on the event but not signed" in str(report.problems[0])


def test_a_guests_signature_is_checked_when_its_key_is_given() -> None:
    host, guest = SigningKey.generate(), SigningKey.generate()
    stamper = Stamper(host, "h", SequenceStore(None))
    signed = orjson.loads(stamper.stamp_guest(_guest(guest), "vsock:9").body)
    # only the host's key: verified, and the guest signature is noted as not checked
    alone = verify_lines(_lines([signed]), _keys(host), name="f")
    assert alone.ok and "guest signature not checked: no guest key for it" in alone.summary()
    both = verify_lines(_lines([signed]), _keys(host), name="f", guest_keys=_keys(guest))
    assert both.ok and "not checked" not in both.summary() and "guest signature verified" in both.summary()
    # a guest that changed its event after signing it (a host with guest_signatures = "off" takes it)
    forged = _guest(guest)
    forged["data"] = {"n": 2}
    stamped = orjson.loads(stamper.stamp_guest(forged, "vsock:9").body)
    bad = verify_lines(_lines([stamped]), _keys(host), name="f", guest_keys=_keys(guest))
    assert not bad.ok and "guest signature: event does not match its signature" in str(bad.problems[0])
    assert verify_lines(_lines([stamped]), _keys(host), name="f").ok  # without the guest's key: a note only


def test_a_guest_key_never_vouches_for_a_host_event() -> None:
    """Guest keys check guest signatures only: an event a guest signed itself, dressed up with the host's
    stamp, is not the host's."""
    host, guest = SigningKey.generate(), SigningKey.generate()
    (real,) = _host_events(host, 1)
    fake = {k: v for k, v in real.items() if k not in ("dssematerial", "signedextattrs")}
    fake["data"] = {"probeSource": "x", "inputs": [], "output": {"i": 666}}
    sign_event(fake, guest, ["hostid", "hostreceivedat", "sequence"])
    report = verify_lines(_lines([real, fake]), _keys(host), name="f", guest_keys=_keys(guest))
    assert not report.ok and report.verified == 1
    assert "f:2" in str(report.problems[0]) and "no signature by a trusted key" in str(report.problems[0])


def test_data_the_host_rewrote_as_big_integer_strings_is_checked_as_the_guest_signed_it() -> None:
    """The receiver carries integers beyond 2^53 (and integral floats from 2^53 on) as decimal strings, as
    docs/protocol.md says; the guest signed the numbers, which the check reads back. A digit string is no excuse
    for data the guest did not sign."""
    host, guest = SigningKey.generate(), SigningKey.generate()
    stamper = Stamper(host, "h", SequenceStore(None))

    def stamped(data: Any, after: Any = None) -> dict[str, Any]:
        ev = _guest(None)
        ev["data"] = data
        sign_event(ev, guest)
        if after is not None:
            ev["data"] = after  # changed after the guest signed (a host with guest_signatures = "off" takes it)
        return orjson.loads(stamper.stamp_guest(ev, "vsock:9").body)  # type: ignore[no-any-return]

    good = [stamped({"a": 2.0**60, "b": [-(2.0**62)], "s": "text"}), stamped({"a": 1e20})]
    assert good[0]["data"]["a"].isdigit() and good[0]["data"]["b"][0].lstrip("-").isdigit()  # JCS digits
    report = verify_lines(_lines(good), _keys(host), name="f", guest_keys=_keys(guest))
    assert report.ok and _only_checked(report.summary())
    bad = [stamped({"v": 1}, {"v": 2, "big": "9007199254740993"}),
           stamped({"a": 2.0**60, "v": 1}, {"a": 2.0**60, "v": 2}), stamped({"a": 2.0**60}, {"a": 2.0**61})]
    report = verify_lines(_lines(bad), _keys(host), name="f", guest_keys=_keys(guest))
    assert len(report.problems) == 3 and all("guest signature" in str(p) for p in report.problems)


def test_a_guest_signature_over_the_host_attributes_is_checked_on_the_values_the_host_kept() -> None:
    """Another agent signs its own hostid, hostreceivedat and sequence: the host overwrites them, keeps the
    guest's values as guesthostid, guesthostreceivedat and guestsequence, and so both signatures check out."""
    host, guest = SigningKey.generate(), SigningKey.generate()
    stamper = Stamper(host, "h", SequenceStore(None))
    claims = {"hostid": "guest-host", "hostreceivedat": "2026-11-22T02:00:00.000001Z", "sequence": "41",
              "hostpeer": "vsock:3"}
    signed = orjson.loads(stamper.stamp_guest(_guest(guest, **claims), "vsock:9").body)
    assert signed["hostid"] == "h" and signed["hostpeer"] == "vsock:9"  # the host's own, never the guest's
    assert {k: signed["guest" + k] for k in claims} == claims
    report = verify_lines(_lines([signed]), _keys(host), name="f", guest_keys=_keys(guest))
    assert report.ok and report.summary() == ("note: f:1: guest signature verified with a --guest-pub key\n"
                                              "OK: 1 event, 1 verified, 0 problems")
    # a guest's value changed after the host signed breaks the host's signature; one changed before the host
    # signed (re-signed by a host that lies about what its guest said) breaks the guest's
    lied = {k: v for k, v in signed.items() if k not in ("dssematerial", "signedextattrs")}
    lied["guestsequence"] = "42"
    sign_event(lied, host, [n for n in signed["signedextattrs"].split(",")])
    report = verify_lines(_lines([lied]), _keys(host), name="f", guest_keys=_keys(guest))
    assert not report.ok and "guest signature" in str(report.problems[0])


def test_a_guest_signature_over_a_host_attribute_with_no_kept_value_is_a_problem() -> None:
    """A host that leaves out the guest's value of an attribute the guest signed (and re-signs the event, with a
    forged subject, say) cannot pass the guest's signature off as unchecked: given the guest's key, it fails."""
    host, guest = SigningKey.generate(), SigningKey.generate()
    stamper = Stamper(host, "h", SequenceStore(None))
    signed = orjson.loads(stamper.stamp_guest(_guest(guest, hostid="claimed"), "vsock:9").body)
    forged = {k: v for k, v in signed.items() if k not in ("dssematerial", "signedextattrs", "guesthostid")}
    forged["subject"] = "/forged"
    sign_event(forged, host, [n for n in signed["signedextattrs"].split(",") if n != "guesthostid"])
    report = verify_lines(_lines([forged]), _keys(host), name="f", guest_keys=_keys(guest))
    assert not report.ok
    assert "guest signature: the guest signed hostid, but the event lacks its value (guesthostid)" in str(
        report.problems[0])
    # without the guest's key nothing can be said of it either way
    report = verify_lines(_lines([forged]), _keys(host), name="f")
    assert report.ok and "guest signature not checked: no guest key for it" in report.summary()


def test_a_relays_signature_over_its_own_guests_material_is_noted_not_failed() -> None:
    """Agent A relays guest G's event to B: A signed G's material, which B does not carry on."""
    b, a, g = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    at_a = orjson.loads(Stamper(a, "a", SequenceStore(None)).stamp_guest(_guest(g), "vsock:5").body)
    at_b = orjson.loads(Stamper(b, "b", SequenceStore(None)).stamp_guest(at_a, "vsock:9").body)
    assert at_b["guesthostid"] == "a" and at_b["guestdssematerial"] == at_a["dssematerial"]
    report = verify_lines(_lines([at_b]), _keys(b), name="f", guest_keys=_keys(a, g))
    assert report.ok and "which the host drops (a relay's signature over its own guest's)" in report.summary()


def test_problems_beyond_the_limit_are_counted_not_listed() -> None:
    key = SigningKey.generate()
    report = verify_lines([b"not json\n"] * (MAX_PROBLEMS + 200), _keys(key), name="f")
    assert len(report.problems) == MAX_PROBLEMS and report.omitted == 200
    assert report.summary().endswith(f"{MAX_PROBLEMS + 200} problems (200 not listed)")
    assert report.as_dict()["omitted"] == 200


def test_an_archive_says_the_same(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "keys")
    events = [orjson.loads(make_event(key, s)) for s in range(1, 5)]
    events[1]["hostpeer"] = "vsock:7"  # changed before it reached the archive: its own signature still holds
    events[2]["note"] = "x"
    write_archive(tmp_path / "a", key, [[orjson.dumps(e) for e in events]])
    out = run_cli(["verify", "--pub", str(tmp_path / "keys" / "host.pub"), str(tmp_path / "a")], cwd=tmp_path)
    text = out.stdout.decode()
    assert out.returncode == 1, text
    assert "unsigned-stamp" in text and "hostpeer is on the event but not signed" in text
    # stdout is one line per problem and the verdict; a note, which fails nothing, goes to stderr
    assert len(text.strip().splitlines()) == 2 and text.strip().splitlines()[-1].endswith("1 problem")
    assert "attribute 'note' is not covered by the signature" in out.stderr.decode()


def test_verify_prints_what_events_hold_escaped(tmp_path: Path) -> None:
    """An id with a newline and a cursor-up escape (an older agent took it) cannot forge a line of the output."""
    key = generate_keypair(tmp_path / "keys")
    event = orjson.loads(make_event(key, 1))
    event["id"] = "evil\nOK: 1 events, 1 verified, 0 problems\x1b[1A"
    (tmp_path / "f.ndjson").write_bytes(orjson.dumps(event) + b"\n")
    out = run_cli(["verify", "--pub", str(tmp_path / "keys" / "host.pub"), str(tmp_path / "f.ndjson")], cwd=tmp_path)
    lines = out.stdout.decode().splitlines()
    assert out.returncode == 1 and len(lines) == 2, lines
    assert "evil\\x0aOK: 1 events" in lines[0] and "\\x1b[1A" in lines[0] and "\x1b" not in out.stdout.decode()
    assert lines[1].startswith("FAILED")


def test_a_pub_that_is_no_key_is_a_usage_error_with_a_short_message(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a key\n")
    (tmp_path / "f.ndjson").write_text("{}\n")
    out = run_cli(["verify", "--pub", str(tmp_path / "junk.pem"), str(tmp_path / "f.ndjson")], cwd=tmp_path)
    err = out.stderr.decode()
    assert out.returncode == 2 and "junk.pem: not a SubjectPublicKeyInfo PEM public key" in err
    assert "https://" not in err


def test_a_member_name_twice_in_one_object_is_a_problem(tmp_path: Path) -> None:
    """A reader that keeps the first of two values would see data and a time nothing signed."""
    key = SigningKey.generate()
    (event,) = _host_events(key, 1)
    body = orjson.dumps(event)
    forged = b'{"data":{"n":666},"time":"1999-01-01T00:00:00Z",' + body[1:]
    nested = body.replace(b'"output":{', b'"output":{"i":7,', 1)
    escaped = body.replace(b'{"specversion"', b'{"\\u0069d":"forged","specversion"', 1)
    for line, names in ((forged, ("data", "time")), (nested, ("i",)), (escaped, ("id",))):
        report = verify_lines([line + b"\n"], _keys(key), name="f")
        assert not report.ok and report.verified == 0
        assert any(f"f:1: member name {n!r} appears twice" in str(report.problems[0]) for n in names)
    assert verify_lines([body + b"\n"], _keys(key), name="f").ok
    # and in an archive
    akey = generate_keypair(tmp_path / "keys")
    good = make_event(akey, 1)
    write_archive(tmp_path / "a", akey, [[b'{"data":{"n":666},' + good[1:]]])
    out = run_cli(["verify", "--pub", str(tmp_path / "keys" / "host.pub"), str(tmp_path / "a")], cwd=tmp_path)
    assert out.returncode == 1 and b"duplicate-name" in out.stdout


def test_line_separators_and_bidi_controls_are_printed_escaped() -> None:
    from agent.auditcmds import printable

    line = printable("f:1: id=x\u2028OK: 9 events\u202eevil\u2066 \x85 é")
    assert line == "f:1: id=x\\u2028OK: 9 events\\u202eevil\\u2066 \\u0085 é"
    assert len(line.splitlines()) == 1


def test_a_guests_own_digit_string_beside_a_number_the_host_rewrote_still_verifies() -> None:
    """"Account as a string, the same as a number": one string is the guest's, the other the receiver's."""
    host, guest = SigningKey.generate(), SigningKey.generate()
    stamper = Stamper(host, "h", SequenceStore(None))
    ev = _guest(None)
    ev["data"] = {"acct": "12345678901234567890", "big": 2.0**60, "more": [2.0**61, "98765432109876543210"]}
    sign_event(ev, guest)
    stamped = orjson.loads(stamper.stamp_guest(ev, "vsock:9").body)
    report = verify_lines(_lines([stamped]), _keys(host), name="f", guest_keys=_keys(guest))
    assert report.ok and _only_checked(report.summary()), report.summary()


def test_an_envelope_with_a_member_name_twice_is_a_problem() -> None:
    """Readers of a DSSE envelope whose ``payload`` appears twice disagree on what was signed: the parser here
    takes the last (signed) one, another may take the first; verify refuses the envelope rather than pick."""
    key = SigningKey.generate()
    (event,) = _host_events(key, 1)
    env = orjson.loads(base64.b64decode(event["dssematerial"]))
    forged = base64.b64encode(bytes(32)).decode()
    raw = (b'{"payloadType":' + orjson.dumps(env["payloadType"]) + b',"payload":"' + forged.encode()
           + b'","payload":' + orjson.dumps(env["payload"]) + b',"signatures":' + orjson.dumps(env["signatures"])
           + b"}")
    event["dssematerial"] = base64.b64encode(raw).decode()
    report = verify_lines(_lines([event]), _keys(key), name="f")
    assert not report.ok and report.verified == 0
    assert [p.reason for p in report.problems] == ["DSSE envelope has the member 'payload' twice"]


def test_a_guest_signature_without_a_key_id_is_checked_with_the_guest_keys() -> None:
    host, guest = SigningKey.generate(), SigningKey.generate()
    ev = _guest(guest)
    env = orjson.loads(base64.b64decode(ev["dssematerial"]))
    del env["signatures"][0]["keyid"]
    ev["dssematerial"] = base64.b64encode(orjson.dumps(env)).decode()
    signed = orjson.loads(Stamper(host, "h", SequenceStore(None)).stamp_guest(ev, "vsock:9").body)
    checked = verify_lines(_lines([signed]), _keys(host), name="f", guest_keys=_keys(guest))
    assert checked.ok and _only_checked(checked.summary())
    other = verify_lines(_lines([signed]), _keys(host), name="f", guest_keys=_keys(SigningKey.generate()))
    assert not other.ok and "guest signature: signature does not verify" in str(other.problems[0])
    alone = verify_lines(_lines([signed]), _keys(host), name="f")
    assert alone.ok and "signed by: (no key id)" in alone.summary()


def test_guest_material_that_is_no_envelope_fails_the_check_when_guest_keys_are_given() -> None:
    """A host with guest_signatures = "off" takes any material; asked to check guest signatures, verify finds
    none there: a problem. Without guest keys it stays a note."""
    host, guest = SigningKey.generate(), SigningKey.generate()
    stamper = Stamper(host, "h", SequenceStore(None))
    stamped = orjson.loads(stamper.stamp_guest(_guest(None, dssematerial="garbage!!"), "vsock:9").body)
    assert stamped["guestdssematerial"] == "garbage!!"
    checked = verify_lines(_lines([stamped]), _keys(host), name="f", guest_keys=_keys(guest))
    assert not checked.ok and "guest signature: its material is not a DSSE envelope" in str(checked.problems[0])
    alone = verify_lines(_lines([stamped]), _keys(host), name="f")
    assert alone.ok and "guest signature not checked: its material is not a DSSE envelope" in alone.summary()
