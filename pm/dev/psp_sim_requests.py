"""The PSP simulator's request bodies, checked: IPPS payouts and QP payment requests (README "PSP simulator").

`parse_payout` and `parse_payment_request` take the decoded JSON and return a `SimRequest`, or raise
`InvalidRequest` with the stable code the simulator answers in a 400 (`{"error": code, "message": ...}`).
Unknown fields are ignored, as PSPs do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pm.config.constants import AMOUNT_MINOR_EXACT_MAX
from pm.dev.psp_sim_behaviour import Provider

REFERENCE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
DESTINATION_REF_LENGTH_MAX = 128
CALLBACK_URL_LENGTH_MAX = 2048
CURRENCIES = ("THB",)
EXPIRES_IN_S_MAX = 86_400
# A hold deadline beyond this (year 2100) is a unit mistake (milliseconds), not a date.
UNIX_S_MAX = 4_102_444_800


class InvalidRequest(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SimRequest:
    provider: Provider
    reference: str
    amount_minor: int
    currency: str
    callback_url: str
    destination_ref: str | None = None  # IPPS only
    hold_expires_at_s: int | None = None  # IPPS only, optional
    expires_in_s: int | None = None  # QP only

    def same_payment(self, other: SimRequest) -> bool:
        """Whether `other` repeats this request (idempotent) rather than reusing its reference."""
        return (self.amount_minor, self.currency, self.destination_ref) == (
            other.amount_minor,
            other.currency,
            other.destination_ref,
        )


def is_reference(value: object) -> bool:
    return isinstance(value, str) and REFERENCE_PATTERN.fullmatch(value) is not None


def _integer(body: dict[str, Any], name: str, minimum: int, maximum: int) -> int:
    value = body.get(name)
    # bool is an int in Python; `true` is not an amount.
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise InvalidRequest(f"invalid_{name}", f"{name} must be an integer in [{minimum}, {maximum}]")
    return value


def _common(body: Any) -> tuple[str, int, str, str]:
    """(reference, amount_minor, currency, callback_url): SimRequest's fields after `provider`, in order."""
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_body", "the body must be a JSON object")
    reference = body.get("reference")
    if not is_reference(reference):
        raise InvalidRequest("invalid_reference", "reference must be 1..64 characters of [A-Za-z0-9_.:-]")
    amount_minor = _integer(body, "amount_minor", 1, AMOUNT_MINOR_EXACT_MAX)
    currency = body.get("currency")
    if currency not in CURRENCIES:
        raise InvalidRequest("invalid_currency", f"currency must be one of {', '.join(CURRENCIES)}")
    callback_url = body.get("callback_url")
    if not isinstance(callback_url, str) or not _is_http_url(callback_url):
        raise InvalidRequest("invalid_callback_url", "callback_url must be an http(s) URL")
    return reference, amount_minor, currency, callback_url


def _is_http_url(value: str) -> bool:
    if len(value) > CALLBACK_URL_LENGTH_MAX:
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number, a bad IPv6 literal
        return False


def parse_payout(body: Any) -> SimRequest:
    common = _common(body)
    destination_ref = body.get("destination_ref")
    if not isinstance(destination_ref, str) or not 1 <= len(destination_ref) <= DESTINATION_REF_LENGTH_MAX:
        raise InvalidRequest(
            "invalid_destination_ref", f"destination_ref must be 1..{DESTINATION_REF_LENGTH_MAX} chars"
        )
    hold_expires_at_s = None
    if body.get("hold_expires_at") is not None:
        hold_expires_at_s = _integer(body, "hold_expires_at", 1, UNIX_S_MAX)
    return SimRequest(Provider.IPPS, *common, destination_ref=destination_ref, hold_expires_at_s=hold_expires_at_s)


def parse_payment_request(body: Any) -> SimRequest:
    common = _common(body)
    return SimRequest(Provider.QP, *common, expires_in_s=_integer(body, "expires_in_s", 1, EXPIRES_IN_S_MAX))
