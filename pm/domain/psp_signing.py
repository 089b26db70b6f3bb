"""PSP callback signatures (issue 5), Stripe's scheme: one module for the simulator, PM's callback route and tests.

    X-PSP-Signature: t=<unix seconds>,v1=<lower-case hex HMAC-SHA256(secret utf-8, "{t}." + raw body)>

A header may carry several `v1=` values (a PSP rotating its secret signs with the old and the new one);
the callback is genuine when any of them matches any of our secrets and `t` is within the tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

SIGNATURE_HEADER = "X-PSP-Signature"
SIGNATURE_SCHEME = "v1"
TOLERANCE_S = 300
# A header longer than this is garbage, not a signature: bounds the parsing work an attacker can cause.
HEADER_LENGTH_MAX = 4096
SIGNATURES_MAX = 8


def _digest(secret: str, body: bytes, timestamp_s: int) -> str:
    payload = f"{timestamp_s}.".encode() + body
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp_s: int) -> str:
    """The header value for `body` sent at `timestamp_s`."""
    assert secret, "a PSP callback secret is never empty"
    return f"t={int(timestamp_s)},{SIGNATURE_SCHEME}={_digest(secret, body, int(timestamp_s))}"


def _parse(header: str) -> tuple[int, list[str]] | None:
    """(timestamp, v1 signatures) or None when the header is not one we can read."""
    if len(header) > HEADER_LENGTH_MAX:
        return None
    timestamp_s: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, separator, value = item.strip().partition("=")
        if not separator:
            continue
        key, value = key.strip(), value.strip()
        if key == "t":
            if not value.isascii() or not value.isdigit() or timestamp_s is not None:
                return None
            timestamp_s = int(value)
        elif key == SIGNATURE_SCHEME and value:
            signatures.append(value)
    if timestamp_s is None or not signatures or len(signatures) > SIGNATURES_MAX:
        return None
    return timestamp_s, signatures


def verify(
    secrets: Iterable[str], header: str | None, body: bytes, now_s: float, tolerance_s: int = TOLERANCE_S
) -> bool:
    """True when `header` is a valid signature of `body` by one of `secrets`, made within ±`tolerance_s`."""
    if not header:
        return False
    parsed = _parse(header)
    if parsed is None:
        return False
    timestamp_s, signatures = parsed
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    matched = False
    for secret in secrets:
        if not secret:
            continue
        expected = _digest(secret, body, timestamp_s).encode()
        for signature in signatures:
            # Every comparison runs (no early exit), so timing tells nothing about which one matched.
            matched |= hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
    return matched
