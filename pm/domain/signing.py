"""HMAC request signing (DESIGN.md §7): one module for the gateway, the client, the simulator and tests.

    canonical = "PM1\\n{timestamp}\\n{nonce}\\n{METHOD}\\n{path}\\n{sorted query}\\n{X-User-Id}\\n"
                "{Idempotency-Key}\\n{hex sha256(body)}"
    X-PM-Signature: v1=<lower-case hex HMAC-SHA256(secret utf-8, canonical)>

`{path}` is the path as sent; `{sorted query}` the query's `name=value` pairs as sent (still
percent-encoded), sorted by byte value, joined by `&`; a missing X-User-Id or Idempotency-Key is an
empty line; the body hash is over the raw bytes (the hash of nothing for a GET).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

SIGNATURE_VERSION = "v1"
CLOCK_SKEW_MAX_S = 300
NONCE_BYTES = 16

HEADER_KEY_ID = "X-PM-Key-Id"
HEADER_TIMESTAMP = "X-PM-Timestamp"
HEADER_NONCE = "X-PM-Nonce"
HEADER_SIGNATURE = "X-PM-Signature"
HEADER_USER_ID = "X-User-Id"
HEADER_IDEMPOTENCY_KEY = "Idempotency-Key"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


def sorted_query(raw_query: str) -> str:
    """The query string's pairs as sent, sorted by byte value (`a=1&b=2`); empty when none."""
    if not raw_query:
        return ""
    pairs = [pair for pair in raw_query.split("&") if pair]
    return "&".join(sorted(pairs, key=lambda pair: pair.encode()))


def canonical_string(
    *,
    timestamp: str,
    nonce: str,
    method: str,
    path: str,
    raw_query: str,
    user_id: str,
    idempotency_key: str,
    body: bytes,
) -> str:
    body_sha256 = hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256
    return "\n".join(
        (
            "PM1",
            timestamp,
            nonce,
            method.upper(),
            path,
            sorted_query(raw_query),
            user_id,
            idempotency_key,
            body_sha256,
        )
    )


def signature(secret: str, canonical: str) -> str:
    digest = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signature_matches(secrets_to_try: Iterable[str], canonical: str, presented: str) -> bool:
    """Constant-time comparison against every active secret (two during a rotation)."""
    matched = False
    for secret in secrets_to_try:
        # No early exit: the time taken does not tell which secret matched.
        matched |= hmac.compare_digest(signature(secret, canonical).encode(), presented.encode())
    return matched


def timestamp_fresh(timestamp: str, now_s: float | None = None) -> bool:
    # isascii: str.isdigit accepts digits like "²" that int() refuses.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return False
    now = time.time() if now_s is None else now_s
    return abs(int(timestamp) - now) <= CLOCK_SKEW_MAX_S


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def sign_headers(
    *,
    key_id: str,
    secret: str,
    method: str,
    path: str,
    raw_query: str = "",
    body: bytes = b"",
    user_id: int | str | None = None,
    idempotency_key: str | None = None,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that sign one request; callers add them to the request as they are."""
    timestamp_text = str(int(time.time()) if timestamp is None else timestamp)
    nonce_text = nonce or new_nonce()
    user_text = "" if user_id is None else str(user_id)
    key_text = idempotency_key or ""
    canonical = canonical_string(
        timestamp=timestamp_text,
        nonce=nonce_text,
        method=method,
        path=path,
        raw_query=raw_query,
        user_id=user_text,
        idempotency_key=key_text,
        body=body,
    )
    headers = {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: timestamp_text,
        HEADER_NONCE: nonce_text,
        HEADER_SIGNATURE: signature(secret, canonical),
    }
    if user_id is not None:
        headers[HEADER_USER_ID] = user_text
    if idempotency_key is not None:
        headers[HEADER_IDEMPOTENCY_KEY] = key_text
    return headers
