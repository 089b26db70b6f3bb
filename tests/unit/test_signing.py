"""Proves the HMAC signing of DESIGN.md §7 byte for byte, with fixed vectors checked independently
(openssl): the canonical string's lines (upper-cased method, query pairs sorted as sent, empty lines
for a missing X-User-Id or Idempotency-Key, the hash of nothing for no body), the signature format,
both secrets of a rotation, and the ±300 s clock window."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pm.domain import signing

BODY = b'{"operation_type":"P2P_TRANSFER","amount_minor":10000,"currency":"THB","recipient_id":1002}'
NONCE = "0123456789abcdef0123456789abcdef"


def test_canonical_string_of_a_post_with_user_and_idempotency_key() -> None:
    canonical = signing.canonical_string(
        timestamp="1700000000", nonce=NONCE, method="post", path="/intents", raw_query="",
        user_id="1001", idempotency_key="order-42", body=BODY,
    )  # fmt: skip
    assert canonical == (
        "PM1\n1700000000\n0123456789abcdef0123456789abcdef\nPOST\n/intents\n\n1001\norder-42\n"
        "2f0d4637edc8cb42c4e0e0880364085f451fcf02028c79673244a71fde87bd90"
    )
    assert signing.signature("test-secret", canonical) == (
        "v1=0998865e4639a52e3f8addacdbc21a0d9ed084883eb93c91a7ea1f128b0424f5"
    )


def test_canonical_string_of_a_get_sorts_the_query_and_leaves_empty_lines() -> None:
    canonical = signing.canonical_string(
        timestamp="1700000000", nonce="nonce-0001", method="GET", path="/api/pm/history",
        raw_query="limit=5&cursor=abc&a=%2F", user_id="", idempotency_key="", body=b"",
    )  # fmt: skip
    assert canonical.split("\n") == [
        "PM1", "1700000000", "nonce-0001", "GET", "/api/pm/history", "a=%2F&cursor=abc&limit=5", "", "",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ]  # fmt: skip
    # Checked with: printf '<canonical>' | openssl dgst -sha256 -hmac test-secret
    assert signing.signature("test-secret", canonical) == (
        "v1=c161393f5a7d6495075adb84adcf0db74c830011c6a90bbe5b7034e2394e515e"
    )


@pytest.mark.parametrize(
    ("raw_query", "expected"),
    [
        ("", ""),
        ("b=2&a=1", "a=1&b=2"),
        ("a=2&a=1", "a=1&a=2"),  # repeated names keep both pairs, ordered by the whole pair
        ("Z=1&a=1&_=1", "Z=1&_=1&a=1"),  # byte order: upper case, then underscore, then lower case
        ("q=%2Fx&q=%2Ax", "q=%2Ax&q=%2Fx"),  # still percent-encoded: sorted as sent, never decoded
        ("a=1&&b=2&", "a=1&b=2"),  # empty pairs carry nothing
        ("flag&a=1", "a=1&flag"),
    ],
)
def test_sorted_query(raw_query: str, expected: str) -> None:
    assert signing.sorted_query(raw_query) == expected


def test_sign_headers_signs_what_the_verifier_rebuilds() -> None:
    headers = signing.sign_headers(
        key_id="pmk_0123456789abcdef", secret="s3cret", method="POST", path="/intents", body=BODY,
        user_id=1001, idempotency_key="order-42", timestamp=1700000000, nonce=NONCE,
    )  # fmt: skip
    assert headers[signing.HEADER_USER_ID] == "1001" and headers[signing.HEADER_IDEMPOTENCY_KEY] == "order-42"
    assert headers[signing.HEADER_TIMESTAMP] == "1700000000" and headers[signing.HEADER_NONCE] == NONCE
    canonical = signing.canonical_string(
        timestamp="1700000000", nonce=NONCE, method="POST", path="/intents", raw_query="",
        user_id="1001", idempotency_key="order-42", body=BODY,
    )  # fmt: skip
    assert signing.signature_matches(["s3cret"], canonical, headers[signing.HEADER_SIGNATURE])
    assert not signing.signature_matches(["other"], canonical, headers[signing.HEADER_SIGNATURE])
    # Without a user or an Idempotency-Key those headers are absent and their lines empty.
    bare = signing.sign_headers(key_id="k", secret="s", method="GET", path="/healthz", timestamp=1, nonce=NONCE)
    assert signing.HEADER_USER_ID not in bare and signing.HEADER_IDEMPOTENCY_KEY not in bare


def test_signature_is_lower_case_hex_of_hmac_sha256_over_utf8() -> None:
    value = signing.signature("ключ", "PM1")
    assert value.startswith("v1=") and value[3:] == value[3:].lower() and len(value) == 3 + 64
    assert value[3:] == hmac.new("ключ".encode(), b"PM1", hashlib.sha256).hexdigest()


def test_either_secret_of_a_rotation_matches() -> None:
    canonical = "PM1\n1\nn\nGET\n/\n\n\n\n" + signing.EMPTY_BODY_SHA256
    presented_old = signing.signature("old", canonical)
    presented_new = signing.signature("new", canonical)
    assert signing.signature_matches(("new", "old"), canonical, presented_old)
    assert signing.signature_matches(("new", "old"), canonical, presented_new)
    assert not signing.signature_matches(("new",), canonical, presented_old)
    assert not signing.signature_matches((), canonical, presented_new)
    assert not signing.signature_matches(("new",), canonical, presented_new.upper())


@pytest.mark.parametrize(
    ("timestamp", "fresh"),
    [("1000", True), ("700", True), ("1300", True), ("699", False), ("1301", False), ("", False),
     ("-1000", False), ("1e3", False), ("1000.0", False), ("9" * 13, False)],
)  # fmt: skip
def test_timestamp_window_is_300_seconds_either_way(timestamp: str, fresh: bool) -> None:
    assert signing.timestamp_fresh(timestamp, now_s=1000) is fresh
