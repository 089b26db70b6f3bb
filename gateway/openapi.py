"""The OpenAPI 3.1 description of the gateway, served at GET /openapi.json.

Written out by hand next to the routes (tests/integration/gateway/test_gateway_operations.py checks that
every route of the app is described here and nothing else is); the request body's schema comes from
the pydantic model the gateway parses with, so the two cannot drift.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from gateway import admin_api, openapi_consent, openapi_fees
from gateway.models import IntentRequest
from gateway.openapi_parts import POSITIVE_ID, SCHEMAS, errors, header, json_content, operation, query, ref
from ledger.accounts import CURRENCY_LEDGER
from pm.config.constants import IDEMPOTENCY_KEY_LENGTH_MAX
from pm.domain.intent import ErrorCode, OperationType, State
from pm.domain.signing import HEADER_KEY_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP
from pm.store.keys import SCOPE_ADMIN, SCOPE_BALANCE_READ, SCOPE_INTENTS_READ, SCOPE_INTENTS_WRITE

SIGNING_DESCRIPTION = (
    "Every request except /healthz, /readyz, /metrics and /openapi.json is signed (HMAC-SHA256, all four "
    "headers together). X-PM-Signature is `v1=<lower-case hex HMAC-SHA256(secret, canonical)>` where "
    "canonical = `PM1\\n{timestamp}\\n{nonce}\\n{METHOD}\\n{path}\\n{sorted query}\\n{X-User-Id}\\n"
    "{Idempotency-Key}\\n{hex sha256(body)}`; the query's `name=value` pairs are kept as sent and sorted "
    "by byte value; a missing X-User-Id or Idempotency-Key is an empty line. Timestamps more than 300 s "
    "from the server's clock and reused nonces are refused (401), also after the server's Redis lost its "
    "data (a GET signed before that is refused: sign it again)."
)


_REASONS = {
    400: "malformed request (header, query or JSON)",
    401: "missing or bad signature, unknown or revoked key, stale timestamp, reused nonce",
    403: "FORBIDDEN: the key lacks the scope; OPERATION_NOT_ALLOWED: the key may not create this operation type",
    404: "no such intent, or not one the user is party to",
    409: "the first request with this Idempotency-Key is still in flight",
    413: "body larger than the configured maximum",
    422: "the body or a parameter is invalid (its code); PII_REFUSED: a tag or destination_ref looks like "
    "personal data (a phone number, national id, e-mail address or name:-style label); never echoed",
    503: "overloaded or a dependency is unavailable; see Retry-After",
}


def _errors(*statuses: int) -> dict[str, Any]:
    return errors(_REASONS, *statuses)


USER_HEADER = header(
    "X-User-Id",
    "the acting user (a positive integer), part of the signature",
    required=True,
    schema=POSITIVE_ID,
)
OPTIONAL_USER_HEADER = {**USER_HEADER, "required": False, "description": "the acting user; optional with admin"}
INTENT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


def _paths() -> dict[str, Any]:
    return {
        "/intents": {
            "post": operation(
                "Create an intent (the one entry point for moving money)",
                SCOPE_INTENTS_WRITE,
                {
                    "200": json_content(ref("Intent"), "with Prefer: wait, the intent reached a final state in time"),
                    "202": json_content(ref("Intent"), "accepted: the intent is CREATED and on its way"),
                    **_errors(400, 401, 403, 404, 409, 413, 422, 503),
                },
                description="The operation_type must be one the key may create (403 OPERATION_NOT_ALLOWED "
                "otherwise; a mini-app merchant's key: MINIAPP_CHARGE and MINIAPP_CREDIT only). ADMIN_ADJUSTMENT "
                "also needs the admin scope; X-User-Id is then the operator. The same Idempotency-Key (per key "
                "and X-User-Id, kept PM_IDEMPOTENCY_RETENTION_S, 24 h by default) and request answer the stored "
                "response again. REFUND (with refund_of, in the original's currency, 1 to what is left to refund) "
                "gives back a SETTLED P2P_TRANSFER (by its recipient, X-User-Id) or MINIAPP_CHARGE (by its "
                "merchant's key), or either by an admin key: 404 for anyone else, 422 NOT_REFUNDABLE for any "
                "other original, 422 REFUND_EXCEEDS_ORIGINAL past its amount, nothing written. max_fee_pre_minor / "
                "max_fee_post_minor (a quote's fee_pre_minor / fee_post_minor sent back): the fees stage rejects "
                "the intent FEE_CHANGED, before any money is held, when a fee it prices is above its bound.",
                parameters=[
                    OPTIONAL_USER_HEADER | {"description": "the sender (required for P2P_TRANSFER)"},
                    header(
                        "Idempotency-Key",
                        f"1-{IDEMPOTENCY_KEY_LENGTH_MAX} visible ASCII characters, unique per caller and user",
                        required=True,
                        schema={"type": "string", "pattern": f"^[!-~]{{1,{IDEMPOTENCY_KEY_LENGTH_MAX}}}$"},
                    ),
                    header("Prefer", "`wait=N`: wait up to N seconds (at most 10) for a final state", required=False),
                ],
                requestBody={"required": True, "content": {"application/json": {"schema": ref("IntentRequest")}}},
            )
        },
        "/intents/{id}": {
            "get": operation(
                "Read an intent (its sender or recipient; any with admin)",
                SCOPE_INTENTS_READ,
                {"200": json_content(ref("Intent"), "the intent"), **_errors(400, 401, 403, 404)},
                parameters=[INTENT_ID, OPTIONAL_USER_HEADER],
            )
        },
        "/intents/{id}/events": {
            "get": operation(
                "The intent's transitions as Server-Sent Events, then live ones until it is final",
                SCOPE_INTENTS_READ,
                {
                    "200": {
                        "description": "`text/event-stream`: one event per transition, `id` = version, "
                        "`data` = an IntentEvent; ends after the final state or the configured duration",
                        "content": {
                            "text/event-stream": {"schema": {"type": "string"}, "x-event-data": ref("IntentEvent")}
                        },
                    },
                    **_errors(400, 401, 403, 404),
                },
                parameters=[
                    INTENT_ID,
                    OPTIONAL_USER_HEADER,
                    header("Last-Event-ID", "resume after this version", required=False),
                    query("after_version", {"type": "integer", "minimum": 0}),
                ],
            )
        },
        "/api/pm/balance": {
            "get": operation(
                "The user's balance in one currency (zeros before the first movement)",
                SCOPE_BALANCE_READ,
                {
                    "200": json_content(ref("Balance"), "the balance"),
                    **_errors(400, 401, 403),
                    "422": json_content(ref("Error"), "UNSUPPORTED_CURRENCY: not a currency the wallet holds"),
                },
                parameters=[
                    USER_HEADER,
                    query(
                        "currency",
                        {"type": "string", "enum": sorted(CURRENCY_LEDGER)},
                        "ISO 4217 code; omitted: the wallet's currency (PM_WALLET_CURRENCY, THB by default)",
                    ),
                ],
            )
        },
        "/api/pm/history": {
            "get": operation(
                "The user's history, newest first, a page at a time",
                SCOPE_BALANCE_READ,
                {"200": json_content(ref("HistoryPage"), "one page"), **_errors(400, 401, 403, 422)},
                parameters=[
                    USER_HEADER,
                    query("limit", {"type": "integer", "minimum": 1}, "at most the configured page size"),
                    query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                ],
            )
        },
        **admin_api.paths(),  # limit rules, routes, the audit trail
        **openapi_fees.paths(),  # POST /quote, fee rules
        **openapi_consent.paths(),  # the confirmation of a mini-app charge, allowances
        "/psp/{channel}/callback": {
            "post": operation(
                "A payment service provider's callback (signed with X-PSP-Signature, not an API key)",
                None,
                {
                    "200": {"description": "recorded (or a duplicate event id, dropped)"},
                    "400": {"description": "not a callback body"},
                    "401": {"description": "bad or missing X-PSP-Signature: nothing trusted, the status is checked"},
                    "404": {"description": "no such channel, or no such payment"},
                },
                parameters=[
                    {"name": "channel", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "X-PSP-Signature", "in": "header", "required": True, "schema": {"type": "string"}},
                ],
                requestBody={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            )
        },
        "/healthz": {"get": operation("Liveness", None, {"200": {"description": "the process serves"}})},
        "/readyz": {
            "get": operation(
                "Readiness: PostgreSQL, Redis and the ledger answer",
                None,
                {
                    "200": {"description": "ready"},
                    "503": {
                        "description": "not ready; `down` lists what failed (database, redis, ledger), `checks` why"
                    },
                },
            )
        },
        "/metrics": {
            "get": operation(
                "Prometheus metrics of this process",
                None,
                {"200": {"description": "text exposition format", "content": {"text/plain": {}}}},
            )
        },
        "/openapi.json": {"get": operation("This document", None, {"200": {"description": "OpenAPI 3.1"}})},
    }


def _schemas() -> dict[str, Any]:
    request_schema = IntentRequest.model_json_schema(ref_template=SCHEMAS + "{model}")
    definitions = request_schema.pop("$defs", {})
    nullable_int = {"type": ["integer", "null"]}
    nullable_str = {"type": ["string", "null"]}
    timestamp = {"type": ["string", "null"], "format": "date-time"}
    return {
        **definitions,
        **admin_api.schemas(),
        **openapi_fees.schemas(),
        "IntentRequest": request_schema,
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "enum": [str(code) for code in ErrorCode]},
                        "message": {"type": "string"},
                    },
                }
            },
        },
        "Intent": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "state": {"type": "string", "enum": [str(state) for state in State]},
                "version": {"type": "integer", "minimum": 1},
                "operation_type": {"type": "string", "enum": [str(kind) for kind in OperationType]},
                "amount_minor": {"type": "integer", "minimum": 1},
                "currency": {"type": "string"},
                "sender_id": nullable_int,
                "recipient_id": nullable_int,
                "channel": nullable_str,
                "fee_pre_minor": {"type": "integer", "minimum": 0},
                "fee_post_minor": {"type": "integer", "minimum": 0},
                "merchant_id": {**nullable_int, "description": "MINIAPP_*: the merchant (from the caller's key)"},
                "destination_ref": {**nullable_str, "description": "IPPS_WITHDRAWAL, THAI_QR_PAY: the payee token"},
                "refund_of": {**nullable_str, "format": "uuid", "description": "REFUND: the intent it refunds"},
                "max_fee_pre_minor": {
                    **nullable_int,
                    "minimum": 0,
                    "description": "the PRE fee bound sent with it (null: none)",
                },
                "max_fee_post_minor": {
                    **nullable_int,
                    "minimum": 0,
                    "description": "the POST fee bound sent with it (null: none)",
                },
                "error": {"oneOf": [{"type": "null"}, ref("Error/properties/error")]},
                "created_at": timestamp,
                "updated_at": timestamp,
            },
        },
        "IntentEvent": {
            "type": "object",
            "properties": {
                "intent_id": {"type": "string", "format": "uuid"},
                "version": {"type": "integer", "minimum": 1},
                "state": {"type": "string", "enum": [str(state) for state in State]},
                "error_code": nullable_str,
                "error_message": nullable_str,
                "created_at": {"type": "string", "format": "date-time"},
            },
        },
        "Balance": {
            "type": "object",
            "properties": {
                "currency": {"type": "string"},
                "available_minor": {"type": "integer", "description": "posted minus pending debits"},
                "pending_minor": {"type": "integer", "description": "held for payments in flight"},
                "posted_minor": {"type": "integer"},
            },
        },
        "HistoryPage": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": ref("HistoryItem")},
                "next_cursor": nullable_str,
            },
        },
        "HistoryItem": {
            "type": "object",
            "properties": {
                "intent_id": {"type": "string", "format": "uuid"},
                "direction": {"type": "string", "enum": ["DEBIT", "CREDIT"]},
                "counterparty_id": nullable_int,
                "merchant_id": {**nullable_int, "description": "the mini-app merchant of a charge or credit"},
                "operation_type": {"type": "string"},
                "amount_minor": {"type": "integer", "minimum": 0},
                "fee_minor": {"type": "integer", "minimum": 0},
                "currency": {"type": "string"},
                "state": {"type": "string"},
                "error_code": nullable_str,
                "created_at": {"type": "string", "format": "date-time"},
                "finished_at": {"type": "string", "format": "date-time"},
            },
        },
    }


@functools.cache
def _document() -> dict[str, Any]:
    def signing_header(name: str, description: str) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": name, "description": description}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OneWallet Payment Manager",
            "version": "1",
            "description": "Intents move money; balances live in the ledger. "
            + SIGNING_DESCRIPTION
            + f" Scopes: {SCOPE_INTENTS_WRITE}, {SCOPE_INTENTS_READ}, {SCOPE_BALANCE_READ}, {SCOPE_ADMIN} "
            "(admin grants all).",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "keyId": signing_header(HEADER_KEY_ID, "the API key's id"),
                "timestamp": signing_header(HEADER_TIMESTAMP, "unix seconds, within 300 s of the server"),
                "nonce": signing_header(HEADER_NONCE, "unique per request (8-64 of A-Z a-z 0-9 _ -)"),
                "signature": signing_header(HEADER_SIGNATURE, "v1=<hex HMAC-SHA256>, see info.description"),
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy (callers may change theirs)."""
    return copy.deepcopy(_document())
