"""The admin API of limit rules, routes, the audit trail and the balance snapshot: its routes for
`gateway/app.py` and its part of the OpenAPI document for `gateway/openapi.py`, kept together so neither can
miss an endpoint.

Built from gateway/openapi_parts.py (openapi.py imports this module, so this one cannot import it).
"""

from __future__ import annotations

from typing import Any

from gateway import admin_audit, admin_balances, admin_limits, admin_routes
from gateway.errors import Handler
from gateway.openapi_parts import OPERATOR_HEADER, ROW_ID, errors, json_content, operation, query, ref
from pm.config.constants import BALANCES_PAGE_ROWS_MAX
from pm.store.balance_snapshots import ACCOUNT_KINDS
from pm.store.keys import SCOPE_ADMIN

# (method, path, view, route name, scope) of every admin endpoint here.
_VIEWS = (*admin_limits.ROUTES, *admin_routes.ROUTES, *admin_audit.ROUTES, *admin_balances.ROUTES)
ADMIN_ROUTES: tuple[tuple[str, str, Handler, str, str], ...] = tuple(
    (method, path, view, name, SCOPE_ADMIN) for method, path, view, name in _VIEWS
)

_REASONS = {
    400: "the body is not JSON",
    401: "missing or bad signature, unknown or revoked key, stale timestamp, reused nonce",
    403: "the key lacks the admin scope",
    404: "no such rule or route",
    409: "the change clashes with what is stored (a route priority taken; too many rules or routes)",
    422: "VALIDATION_FAILED: the body or a parameter is invalid (unknown fields are refused); PII_REFUSED: a "
    "limit rule's tag looks like personal data (a phone number, national id, e-mail or name: label); "
    "UNSUPPORTED_CURRENCY: a currency the ledger does not hold, or one the route's channel does not carry",
    503: "a dependency is unavailable; see Retry-After",
}


def _operation(summary: str, responses: dict[str, Any], *statuses: int, **extra: Any) -> dict[str, Any]:
    return operation(summary, SCOPE_ADMIN, responses | errors(_REASONS, 401, 403, 503, *statuses), **extra)


def _crud(plural: str, thing: str, schema: str, request_schema: str, delete_means: str) -> dict[str, Any]:
    body = {"required": True, "content": {"application/json": {"schema": ref(request_schema)}}}
    listed = {"type": "object", "properties": {"items": {"type": "array", "items": ref(schema)}}}
    return {
        f"/admin/{plural}": {
            "post": _operation(
                f"Create a {thing} (version 1); recorded in the audit trail",
                {"201": json_content(ref(schema), f"the {thing}")},
                400, 409, 422,
                parameters=[OPERATOR_HEADER], requestBody=body,
            ),
            "get": _operation(f"Every {thing}, enabled or not", {"200": json_content(listed, f"the {thing}s")},
                              parameters=[OPERATOR_HEADER]),
        },
        f"/admin/{plural}/{{id}}": {
            "put": _operation(
                f"Replace a {thing} (version + 1); recorded in the audit trail",
                {"200": json_content(ref(schema), f"the {thing}")},
                400, 404, 409, 422,
                parameters=[ROW_ID, OPERATOR_HEADER], requestBody=body,
            ),
            "delete": _operation(
                f"Disable a {thing} ({delete_means}); recorded in the audit trail",
                {"200": json_content(ref(schema), f"the {thing}, disabled")},
                404,
                parameters=[ROW_ID, OPERATOR_HEADER],
            ),
        },
    }  # fmt: skip


def paths() -> dict[str, Any]:
    page_parameters = [
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": admin_audit.AUDIT_PAGE_SIZE_MAX}},
        {"name": "before", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
         "description": "next_before of the previous page"},
    ]  # fmt: skip
    return {
        **_crud("limit-rules", "limit rule", "LimitRule", "LimitRuleRequest", "it no longer limits"),
        **_crud("routes", "route", "PaymentRoute", "PaymentRouteRequest", "validation no longer picks it"),
        "/admin/audit": {
            "get": _operation(
                "The admin audit trail, newest first",
                {"200": json_content(ref("AuditPage"), "one page")},
                422,
                parameters=page_parameters,
            )
        },
        "/admin/balances": {"get": _balances_operation()},
    }


def _balances_operation() -> dict[str, Any]:
    reasons = _REASONS | {
        400: "BAD_REQUEST: page is not the next_page of an answer",
        422: "VALIDATION_FAILED: an unknown kind, or a limit out of range",
    }
    return operation(
        "The balance snapshot: every ledger account as the status poller last read it, by account id",
        SCOPE_ADMIN,
        {"200": json_content(ref("BalancePage"), "one page")} | errors(reasons, 400, 401, 403, 422, 503),
        description="Read from PostgreSQL (pm.account_balance_snapshot), never from the ledger: as fresh as "
        "the last snapshot (PM_BALANCE_SNAPSHOT_INTERVAL_S; each row's taken_at and ledger_timestamp say when).",
        parameters=[
            query("kind", {"type": "string", "enum": list(ACCOUNT_KINDS)}, "only accounts of this kind"),
            query("limit", {"type": "integer", "minimum": 1, "maximum": BALANCES_PAGE_ROWS_MAX}, "rows per page"),
            query("page", {"type": "string", "pattern": "^[1-9][0-9]{0,38}$"}, "next_page of the previous answer"),
        ],
    )


def schemas() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    common = {"id": {"type": "integer"}, "version": {"type": "integer", "minimum": 1}, "enabled": {"type": "boolean"},
              "created_at": timestamp, "updated_at": timestamp}  # fmt: skip
    limit_rule = admin_limits.LimitRuleBody.model_json_schema()["properties"]
    route = admin_routes.RouteBody.model_json_schema()["properties"]
    return {
        "LimitRuleRequest": admin_limits.LimitRuleBody.model_json_schema(),
        "PaymentRouteRequest": admin_routes.RouteBody.model_json_schema(),
        "LimitRule": {"type": "object", "properties": {**limit_rule, **common}},
        "PaymentRoute": {"type": "object", "properties": {**route, **common}},
        "AuditPage": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": ref("AuditEntry")},
                "next_before": {"type": ["integer", "null"]},
            },
        },
        "BalancePage": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": ref("AccountBalance")},
                "next_page": {"type": ["string", "null"]},
            },
        },
        "AccountBalance": _account_balance_schema(),
        "AuditEntry": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "at": timestamp,
                "api_key_id": {"type": "string"},
                "operator_id": {"type": ["integer", "null"]},
                "entity": {"type": "string", "enum": ["fee_rule", "limit_rule", "route"]},
                "entity_id": {"type": "integer"},
                "action": {"type": "string", "enum": ["create", "update", "delete"]},
                "before": {"type": ["object", "null"]},
                "after": {"type": ["object", "null"]},
            },
        },
    }


def _account_balance_schema() -> dict[str, Any]:
    amount = {"type": "integer"}
    counter = {"type": "integer", "minimum": 0}
    nullable_id = {"type": ["integer", "null"], "minimum": 1}
    return {
        "type": "object",
        "properties": {
            "account_id": {"type": "string", "pattern": "^[1-9][0-9]{0,38}$",
                           "description": "the 128-bit ledger account id, as decimal text"},
            "name": {"type": ["string", "null"], "description": "e.g. user:42:THB; null until known"},
            "kind": {"type": "string", "enum": list(ACCOUNT_KINDS)},
            "currency": {"type": ["string", "null"]},
            "ledger": {"type": "integer"},
            "code": {"type": "integer"},
            "user_id": nullable_id,
            "merchant_id": nullable_id,
            "posted_minor": amount | {"description": "credits_posted - debits_posted"},
            "pending_minor": counter | {"description": "debits_pending: held for payments in flight"},
            "available_minor": amount | {"description": "posted_minor - pending_minor"},
            "debits_pending": counter,
            "debits_posted": counter,
            "credits_pending": counter,
            "credits_posted": counter,
            "ledger_timestamp": {"type": "integer", "minimum": 0,
                                 "description": "cluster time (ns) of the ledger's newest transfer when read"},
            "taken_at": {"type": "string", "format": "date-time"},
        },
    }  # fmt: skip
