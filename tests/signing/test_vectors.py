"""The CloudEvents verifiability extension's own test vectors."""

from __future__ import annotations

import base64

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import VerifyError
from agent.signing.event import material, normalize_time, verify_event
from agent.signing.keys import VerifyKey

# The extension's test key: ECDSA over P-256, SHA-256, signatures as raw r||s.
X = 46950820868899156662930047687818585632848591499744589407958293238635476079160
Y = 5640078356564379163099075877009565129882514886557779369047442380624545832820

CASE5 = {
    "specversion": "1.0",
    "id": "1",
    "source": "example/uri",
    "type": "example.type.binary",
    "datacontenttype": "application/octet-stream",
    "data_base64": "8J+koQ==",
}
CASE5_MATERIAL = (
    "eyJwYXlsb2FkVHlwZSI6Imh0dHBzOi8vY2xvdWRldmVudHMuaW8vdmVyaWZpYWJpbGl0eS9kc3NlL3YwLjEiLCJwYXlsb2FkIjoicUNTZWlaa1Mra"
    "Eg5V2lDbGZxNnBsZnFZTlZ5Mmt2eFdSZm9CckxFem9Eaz0iLCJzaWduYXR1cmVzIjpbeyJrZXlpZCI6InRlc3RrZXkiLCJzaWciOiJEWXdiU3V4SD"
    "RXcWFhQlZPVlU4TllJYTZXYnZDazkvdkc5aGV0d3BKNHpJNWo2am1BTGRNaHcrcVZuc211YzY2NWZqVlJGVDFRUHUvanA1Z0c0U2pzUT09In1dfQ=="
)


@pytest.fixture
def test_key() -> VerifyKey:
    return VerifyKey(ec.EllipticCurvePublicNumbers(X, Y, ec.SECP256R1()).public_key())


def test_case5_binary_data_digest() -> None:
    assert base64.b64encode(material(CASE5, [])).decode() == "qCSeiZkS+hH9WiClfq6plfqYNVy2kvxWRfoBrLEzoDk="


def test_case5_full_material_verifies_with_ecdsa_p256(test_key: VerifyKey) -> None:
    event = {**CASE5, "dssematerial": CASE5_MATERIAL}
    verified = verify_event(event, {"testkey": test_key})
    assert verified == CASE5  # only signed attributes come back: no dssematerial


def test_case5_envelope_digest_matches_recomputed(test_key: VerifyKey) -> None:
    env = orjson.loads(base64.b64decode(CASE5_MATERIAL))
    assert base64.b64decode(env["payload"]) == material(CASE5, [])


def test_case5_altered_data_fails(test_key: VerifyKey) -> None:
    event = {**CASE5, "data_base64": base64.b64encode(b"\xf0\x9f\xa4\xa2").decode(), "dssematerial": CASE5_MATERIAL}
    with pytest.raises(VerifyError, match="modified"):
        verify_event(event, {"testkey": test_key})


def test_case5_untrusted_key_id_fails(test_key: VerifyKey) -> None:
    with pytest.raises(VerifyError, match="trusted"):
        verify_event({**CASE5, "dssematerial": CASE5_MATERIAL}, {"otherkey": test_key})


def test_cases_3_and_4_time_zones_normalize_alike() -> None:
    base = {"specversion": "1.0", "id": "1", "source": "example/uri", "type": "example.type", "subject": ""}
    zulu = material({**base, "time": "2020-06-18T17:24:53Z", "data": {"hello": "world"}}, [])
    plus2 = material({**base, "time": "2020-06-18T19:24:53+02:00", "data": {"hello": "world"}}, [])
    frac = material({**base, "time": "2020-06-18T17:24:53.999999Z", "data": {"hello": "world"}}, [])
    assert zulu == plus2 == frac


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2020-06-18T17:24:53Z", "2020-06-18T17:24:53Z"),
        ("2020-06-18T19:24:53+02:00", "2020-06-18T17:24:53Z"),
        ("2020-06-18t17:24:53.123456789z", "2020-06-18T17:24:53Z"),
        ("2020-01-01T00:30:00-01:00", "2020-01-01T01:30:00Z"),
        ("2020-01-01T00:30:00+01:00", "2019-12-31T23:30:00Z"),
        ("2020-01-01T00:30:00-23:59", "2020-01-02T00:29:00Z"),
        ("0999-01-01T00:00:00Z", "0999-01-01T00:00:00Z"),  # four digits, as RFC 3339 writes years
        ("0001-06-01T00:30:00.5+01:00", "0001-05-31T23:30:00Z"),
    ],
)
def test_normalize_time(given: str, expected: str) -> None:
    assert normalize_time(given) == expected


@pytest.mark.parametrize("bad", ["2020-06-18", "yesterday", "2020-13-01T00:00:00Z", "2020-06-18T17:24:53",
                                 "2024-01-01T10:00:00+24:00", "2024-01-01T10:00:00-00:60"])
def test_normalize_time_rejects(bad: str) -> None:
    with pytest.raises(VerifyError):
        normalize_time(bad)


@pytest.mark.parametrize("beyond", ["0000-01-01T00:00:00Z", "0000-06-01T12:00:00+01:00", "9999-12-31T23:30:00-01:00",
                                    "0001-01-01T00:30:00+01:00"])
def test_a_time_whose_utc_form_has_no_four_digit_year_is_refused_saying_so(beyond: str) -> None:
    """RFC 3339 has years 0000 to 9999; the normalized UTC form the signature covers can only be written for
    0001 to 9999 (a time near either end may cross it with its offset)."""
    with pytest.raises(VerifyError, match="years 0001 to 9999") as exc:
        normalize_time(beyond)
    assert "out of range" not in str(exc.value)
    assert normalize_time("9999-12-31T23:30:00+01:00") == "9999-12-31T22:30:00Z"
    assert normalize_time("0001-01-01T00:30:00-01:00") == "0001-01-01T01:30:00Z"


def test_case8_spaces_in_signedextattrs_are_rejected(test_key: VerifyKey) -> None:
    event = {**CASE5, "exta": "value1", "extb": "value2", "signedextattrs": "exta, extb",
             "dssematerial": CASE5_MATERIAL}
    with pytest.raises(VerifyError):
        verify_event(event, {"testkey": test_key})
