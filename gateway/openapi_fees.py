"""The OpenAPI description of POST /quote and the fee-rule admin API, merged into gateway/openapi.py.

Built from gateway/openapi_parts.py (openapi.py imports this module, so this one cannot import it); the
rule body's schema comes from the pydantic model the views parse with, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from gateway.admin_fee_rules import FeeRuleBody
from gateway.openapi_parts import (
    OPERATOR_HEADER,
    POSITIVE_ID,
    ROW_ID,
    SCHEMAS,
    errors,
    header,
    json_content,
    operation,
    ref,
)
from pm.store.keys import SCOPE_ADMIN, SCOPE_INTENTS_WRITE

_REASONS = {
    400: "malformed request (header or JSON)",
    401: "missing or bad signature, unknown or revoked key, stale timestamp, reused nonce",
    403: "FORBIDDEN: the key lacks the scope; OPERATION_NOT_ALLOWED (/quote): the key may not create this type",
    404: "no such fee rule",
    409: "CONFLICT: enabling this rule would pass the cap on enabled fee rules",
    413: "body larger than the configured maximum",
    422: "the body is invalid (unknown fields are refused; a rule without a currency), or the intent would be "
    "refused (its code); PII_REFUSED: a tag, destination_ref, rule name, string literal or comment looks like "
    "personal data; UNSUPPORTED_CURRENCY: a rule's currency the ledger does not hold",
    503: "a dependency is unavailable; see Retry-After",
}
RULE_CURRENCY = {
    "type": "string",
    "pattern": "^[A-Z]{3}$",
    "description": "the rule prices intents of this currency only; its fee bounds are in its minor units",
}
SENDER_HEADER = header(
    "X-User-Id", "the sender (required for P2P_TRANSFER), part of the signature", required=False, schema=POSITIVE_ID
)


def _errors(*statuses: int) -> dict[str, Any]:
    return errors(_REASONS, *statuses)


def paths() -> dict[str, Any]:
    rule_invalid = {
        "400": json_content(ref("Error"), "RULE_INVALID: an expression does not compile, type-check or fit")
    }
    rule_body = {"required": True, "content": {"application/json": {"schema": ref("FeeRuleRequest")}}}
    return {
        "/quote": {
            "post": operation(
                "What an intent would cost (fees, sender debit, recipient credit); nothing is created",
                SCOPE_INTENTS_WRITE,
                {"200": json_content(ref("Quote"), "the quote"), **_errors(400, 401, 403, 413, 422, 503)},
                description="The body, signing and parties of POST /intents; no Idempotency-Key. 422 with the "
                "code the intent would be rejected with: NO_ROUTE, FEE_RULE_ERROR, FEE_EXCEEDS_AMOUNT (a POST "
                "fee not below the amount), FEE_CHANGED (a fee above the body's max_fee_pre_minor / "
                "max_fee_post_minor), or a body refusal. Only the rules of the body's currency price it. Send the "
                "answer's fee_pre_minor and fee_post_minor back as POST /intents' max_fee_pre_minor and "
                "max_fee_post_minor: the user then pays no fee above what it was shown.",
                parameters=[SENDER_HEADER],
                requestBody={"required": True, "content": {"application/json": {"schema": ref("IntentRequest")}}},
            )
        },
        "/admin/fee-rules": {
            "post": operation(
                "Create a fee rule (version 1)",
                SCOPE_ADMIN,
                {
                    "201": json_content(ref("FeeRule"), "the rule as saved"),
                    **_errors(401, 403, 409, 413, 422),
                    **rule_invalid,
                },
                parameters=[OPERATOR_HEADER],
                requestBody=rule_body,
            ),
            "get": operation(
                "Every fee rule's current version (enabled first)",
                SCOPE_ADMIN,
                {"200": json_content(ref("FeeRuleList"), "the rules"), **_errors(401, 403)},
                parameters=[OPERATOR_HEADER],
            ),
        },
        "/admin/fee-rules/{id}": {
            "get": operation(
                "A fee rule's current version and its earlier versions",
                SCOPE_ADMIN,
                {"200": json_content(ref("FeeRuleHistory"), "the rule"), **_errors(401, 403, 404)},
                parameters=[ROW_ID, OPERATOR_HEADER],
            ),
            "put": operation(
                "Replace a fee rule (the whole rule): a new version; priced intents keep theirs",
                SCOPE_ADMIN,
                {
                    "200": json_content(ref("FeeRule"), "the new version"),
                    **_errors(401, 403, 404, 409, 413, 422),
                    **rule_invalid,
                },
                parameters=[ROW_ID, OPERATOR_HEADER],
                requestBody=rule_body,
            ),
            "delete": operation(
                "Disable a fee rule: a new version with enabled false (history kept)",
                SCOPE_ADMIN,
                {"200": json_content(ref("FeeRule"), "the disabled rule"), **_errors(401, 403, 404)},
                parameters=[ROW_ID, OPERATOR_HEADER],
            ),
        },
    }


def schemas() -> dict[str, Any]:
    request_schema = FeeRuleBody.model_json_schema(ref_template=SCHEMAS + "{model}")
    nullable_int = {"type": ["integer", "null"]}
    nullable_str = {"type": ["string", "null"]}
    timestamp = {"type": ["string", "null"], "format": "date-time"}
    applied = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "version": {"type": "integer", "minimum": 1},
            "kind": {"type": "string", "enum": ["PRE", "POST"]},
            "fee_minor": {"type": "integer", "minimum": 0},
        },
    }
    rule = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "version": {"type": "integer", "minimum": 1},
            "name": {"type": "string"},
            "currency": RULE_CURRENCY,
            "operation_type": nullable_str,
            "channel": nullable_str,
            "condition": {"type": "string"},
            "amount": {"type": "string"},
            "kind": {"type": "string", "enum": ["PRE", "POST"]},
            "priority": {"type": "integer", "minimum": 0},
            "min_fee_minor": {"type": "integer", "minimum": 0, "description": "0 when saved as null"},
            "max_fee_minor": {**nullable_int, "description": "null: no maximum"},
            "valid_from": timestamp,
            "valid_to": timestamp,
            "enabled": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    }
    version = {
        "type": "object",
        "properties": {
            "version": {"type": "integer", "minimum": 1},
            "currency": {"type": "string", "description": "the version's currency (THB for those before sql/0022)"},
            "created_at": {"type": "string", "format": "date-time"},
            "definition": {"type": "object", "description": "every field of the rule as saved in this version"},
        },
    }
    return {
        "FeeRuleRequest": request_schema,
        "FeeRule": rule,
        "FeeRuleList": {"type": "object", "properties": {"items": {"type": "array", "items": ref("FeeRule")}}},
        "FeeRuleHistory": {
            "allOf": [
                ref("FeeRule"),
                {"type": "object", "properties": {"versions": {"type": "array", "items": version}}},
            ]
        },
        "AppliedFeeRule": applied,
        "Quote": {
            "type": "object",
            "properties": {
                "fee_pre_minor": {"type": "integer", "minimum": 0, "description": "the sender pays it on top"},
                "fee_post_minor": {"type": "integer", "minimum": 0, "description": "deducted from the recipient"},
                "sender_debit_minor": {"type": "integer", "description": "amount + PRE fee"},
                "recipient_credit_minor": {"type": "integer", "description": "amount - POST fee"},
                "rules": {"type": "array", "items": ref("AppliedFeeRule")},
            },
        },
    }
