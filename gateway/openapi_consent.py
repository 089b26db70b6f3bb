"""The OpenAPI description of a user's consent to mini-app charges (gateway/consent.py), merged into
gateway/openapi.py: POST /intents/{id}/confirm and the allowance routes, scope `consent:write`."""

from __future__ import annotations

from typing import Any

from gateway.openapi_parts import POSITIVE_ID, errors, header, json_content, operation, query
from pm.store.keys import SCOPE_CONSENT_WRITE

_REASONS = {
    400: "malformed request (header, path or JSON)",
    401: "missing or bad signature, unknown or revoked key, stale timestamp, reused nonce",
    403: "FORBIDDEN: the key lacks the consent:write scope",
    404: "no such mini-app charge of this user (another user's is answered the same)",
    409: "CONFIRMATION_EXPIRED: not confirmed in time; CONFLICT: the charge ended otherwise",
    422: "the allowance is invalid (its code)",
}
_USER = header("X-User-Id", "the user who consents, part of the signature", required=True, schema=POSITIVE_ID)
_MERCHANT = {"name": "merchant_id", "in": "path", "required": True, "schema": POSITIVE_ID}
_INTENT = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_ALLOWANCE = {
    "type": "object",
    "properties": {
        "merchant_id": POSITIVE_ID,
        "currency": {"type": "string"},
        "daily_max_minor": {"type": "integer"},
        "used_today_minor": {"type": "integer"},
        "granted_at": {"type": "string", "format": "date-time"},
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    return errors(_REASONS, *statuses)


def paths() -> dict[str, Any]:
    allowance_body = {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["daily_max_minor", "currency"],
                    "properties": {
                        "daily_max_minor": {"type": "integer", "minimum": 1},
                        "currency": {"type": "string"},
                    },
                }
            }
        },
    }
    return {
        "/intents/{id}/confirm": {
            "post": operation(
                "The user confirms a mini-app charge waiting for them (AWAITING_CONFIRMATION -> VALIDATED)",
                SCOPE_CONSENT_WRITE,
                {"200": json_content({"type": "object"}, "the intent as it is now"), **_errors(400, 403, 404, 409)},
                parameters=[_INTENT, _USER],
            )
        },
        "/api/pm/allowances": {
            "get": operation(
                "The user's allowances, with what today used of each",
                SCOPE_CONSENT_WRITE,
                {
                    "200": json_content(
                        {"type": "object", "properties": {"items": {"type": "array", "items": _ALLOWANCE}}}, "the list"
                    ),
                    **_errors(400, 403),
                },
                parameters=[_USER],
            )
        },
        "/api/pm/allowances/{merchant_id}": {
            "put": operation(
                "The user lets the merchant charge up to daily_max_minor a day without asking",
                SCOPE_CONSENT_WRITE,
                {"200": json_content(_ALLOWANCE, "the allowance"), **_errors(400, 403, 422)},
                description="The body, or (with an empty body, as the nginx edge sends it) the query "
                "`?daily_max_minor=N&currency=THB`.",
                parameters=[
                    _MERCHANT,
                    _USER,
                    query("daily_max_minor", {"type": "integer", "minimum": 1}, "with an empty body"),
                    query("currency", {"type": "string"}, "with an empty body"),
                ],
                requestBody=allowance_body,
            ),
            "delete": operation(
                "The user revokes the merchant's allowance (every currency)",
                SCOPE_CONSENT_WRITE,
                {"200": json_content({"type": "object"}, "how many were revoked"), **_errors(400, 403)},
                parameters=[_MERCHANT, _USER],
            ),
        },
    }
