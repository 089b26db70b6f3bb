"""Proves the PSP callback signature (Stripe's scheme) byte for byte against an independent HMAC, and that
verify refuses every forgery: a tampered body, a wrong secret, a stale or future timestamp, garbage
headers; and accepts a rotation (several v1= values, several secrets)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pm.domain import psp_signing

SECRET = "sandbox-ipps-callback-secret"
BODY = b'{"event_id":"e1","provider":"ipps","reference":"r-1","status":"SUCCEEDED"}'
NOW_S = 1_700_000_000


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert psp_signing.sign(SECRET, BODY, NOW_S) == f"t=1700000000,v1={expected}"
    assert psp_signing.SIGNATURE_HEADER == "X-PSP-Signature"


def test_a_genuine_signature_verifies() -> None:
    header = psp_signing.sign(SECRET, BODY, NOW_S)
    assert psp_signing.verify([SECRET], header, BODY, now_s=NOW_S + 0.5)


def test_a_tampered_body_fails() -> None:
    header = psp_signing.sign(SECRET, BODY, NOW_S)
    assert not psp_signing.verify([SECRET], header, BODY.replace(b"SUCCEEDED", b"DECLINED"), now_s=NOW_S)
    assert not psp_signing.verify([SECRET], header, BODY + b" ", now_s=NOW_S)


def test_a_wrong_secret_fails() -> None:
    header = psp_signing.sign("another-secret-of-length", BODY, NOW_S)
    assert not psp_signing.verify([SECRET], header, BODY, now_s=NOW_S)
    assert not psp_signing.verify([], header, BODY, now_s=NOW_S)


def test_a_tampered_timestamp_fails() -> None:
    header = psp_signing.sign(SECRET, BODY, NOW_S).replace("t=1700000000", "t=1700000001")
    assert not psp_signing.verify([SECRET], header, BODY, now_s=NOW_S)


@pytest.mark.parametrize("offset_s", [-301, 301, -10_000, 10_000])
def test_a_stale_or_future_timestamp_fails(offset_s: int) -> None:
    header = psp_signing.sign(SECRET, BODY, NOW_S)
    assert not psp_signing.verify([SECRET], header, BODY, now_s=NOW_S - offset_s)


@pytest.mark.parametrize("offset_s", [-300, 300, 0])
def test_the_tolerance_is_inclusive(offset_s: int) -> None:
    header = psp_signing.sign(SECRET, BODY, NOW_S)
    assert psp_signing.verify([SECRET], header, BODY, now_s=NOW_S + offset_s)


def test_a_custom_tolerance_applies() -> None:
    header = psp_signing.sign(SECRET, BODY, NOW_S)
    assert not psp_signing.verify([SECRET], header, BODY, now_s=NOW_S + 11, tolerance_s=10)
    assert psp_signing.verify([SECRET], header, BODY, now_s=NOW_S + 10, tolerance_s=10)


def test_several_signatures_and_secrets_as_in_a_rotation() -> None:
    good = psp_signing.sign(SECRET, BODY, NOW_S).split(",v1=")[1]
    header = f"t={NOW_S},v1={'0' * 64},v1={good}"
    assert psp_signing.verify(["old-secret-000000", SECRET], header, BODY, now_s=NOW_S)
    assert psp_signing.verify([SECRET], f" t={NOW_S} , v1={good} ", BODY, now_s=NOW_S)
    assert not psp_signing.verify(["old-secret-000000"], header, BODY, now_s=NOW_S)


def test_unknown_schemes_are_ignored() -> None:
    good = psp_signing.sign(SECRET, BODY, NOW_S).split(",v1=")[1]
    assert psp_signing.verify([SECRET], f"t={NOW_S},v0=abc,v1={good}", BODY, now_s=NOW_S)
    assert not psp_signing.verify([SECRET], f"t={NOW_S},v0={good}", BODY, now_s=NOW_S)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=,v1=",
        "v1=abcdef",
        f"t={NOW_S}",
        f"t={NOW_S},v1=",
        f"t=abc,v1={'0' * 64}",
        f"t=-{NOW_S},v1={'0' * 64}",
        f"t=１７,v1={'0' * 64}",
        f"t={NOW_S},t={NOW_S},v1={'0' * 64}",
        f"t={NOW_S},v1=é{'0' * 63}",
        "," * 10_000,
        f"t={NOW_S}," + ",".join(["v1=" + "0" * 64] * 20),
    ],
)
def test_garbage_headers_fail(header: str | None) -> None:
    assert not psp_signing.verify([SECRET], header, BODY, now_s=NOW_S)
