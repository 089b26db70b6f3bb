"""The admin API of limit rules, routes and the audit trail on real PostgreSQL: create, replace, list and
disable with a version each, one audit row per change with who, before and after, a new rule generation;
refusals with stable codes (400 not JSON, 422 bad or unknown fields, 422 UNSUPPORTED_CURRENCY for a
currency the ledger does not hold or a route's channel does not carry, 404 no such row, 409 a route
priority taken or a cap on enabled limit rules or on routes reached, with nothing written); the audit
pages newest first; and keys without the admin scope get 403 everywhere."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from gateway.admin_api import ADMIN_ROUTES
from pm.store import limit_rules, payment_routes
from pm.store.audit import current_rule_generation
from tests.support.gateway import ADMIN, Gateway, Key, error_of

LIMIT_RULE = {"currency": "THB", "operation_type": "P2P_TRANSFER", "tag": None, "period": "daily",
              "max_amount_minor": 50_000, "max_count": None}  # fmt: skip


def route_body(**changes: Any) -> dict[str, Any]:
    # Tests share the session's database and UNIQUE(operation_type, priority): a priority of its own.
    body = {"operation_type": "P2P_TRANSFER", "currencies": ["THB"], "min_amount_minor": 1, "max_amount_minor": 1_000,
            "channel": "INTERNAL_P2P", "priority": random.randrange(10_000, 2**31 - 1), "enabled": False}  # fmt: skip
    return body | changes


async def admin_send(gateway: Gateway, key: Key, method: str, path: str, body: Any = None, operator: int | None = 7):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    return await gateway.send(method, path, key=key, body=payload, user_id=operator)


async def audit_of(gateway: Gateway, key: Key) -> list[dict[str, Any]]:
    """This key's changes, newest first, read through GET /admin/audit."""
    response = await admin_send(gateway, key, "GET", "/admin/audit?limit=200")
    assert response.status == 200
    return [item for item in (await response.json())["items"] if item["api_key_id"] == key.key_id]


async def test_limit_rules_are_created_replaced_listed_and_disabled_with_an_audit_row_each(gateway: Gateway) -> None:
    admin = await gateway.key(*ADMIN)
    generation = await current_rule_generation(gateway.pool)

    created = await admin_send(gateway, admin, "POST", "/admin/limit-rules", LIMIT_RULE, operator=42)
    assert created.status == 201, await created.text()
    rule = await created.json()
    assert (rule["version"], rule["enabled"], rule["max_count"]) == (1, True, None)
    changed = {**LIMIT_RULE, "tag": "kyc_verified", "period": "monthly", "max_count": 30}
    replaced = await admin_send(gateway, admin, "PUT", f"/admin/limit-rules/{rule['id']}", changed)
    assert replaced.status == 200
    assert (await replaced.json()) | {"updated_at": None} == rule | changed | {"version": 2, "updated_at": None}
    listed = await (await admin_send(gateway, admin, "GET", "/admin/limit-rules")).json()
    assert next(item for item in listed["items"] if item["id"] == rule["id"])["version"] == 2
    deleted = await admin_send(gateway, admin, "DELETE", f"/admin/limit-rules/{rule['id']}", operator=None)
    assert deleted.status == 200
    assert ((await deleted.json())["enabled"], (await deleted.json())["version"]) == (False, 3)
    again = await admin_send(gateway, admin, "DELETE", f"/admin/limit-rules/{rule['id']}")
    assert again.status == 200 and (await again.json())["version"] == 3  # nothing changed, nothing recorded

    audit = await audit_of(gateway, admin)
    assert [(a["entity"], a["entity_id"], a["action"]) for a in audit] == [
        ("limit_rule", rule["id"], "delete"),
        ("limit_rule", rule["id"], "update"),
        ("limit_rule", rule["id"], "create"),
    ]
    delete, update, create = audit
    assert (create["operator_id"], create["before"], create["after"]["version"]) == (42, None, 1)
    assert (update["before"]["tag"], update["after"]["tag"], update["after"]["max_count"]) == (None, "kyc_verified", 30)
    assert (delete["operator_id"], delete["before"]["enabled"], delete["after"]["enabled"]) == (None, True, False)
    assert await current_rule_generation(gateway.pool) >= generation + 3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "BAD_REQUEST"),
        (b"[]", 422, "VALIDATION_FAILED"),
        (LIMIT_RULE | {"scope": "THB"}, 422, "VALIDATION_FAILED"),  # unknown fields are refused
        ({k: v for k, v in LIMIT_RULE.items() if k != "currency"}, 422, "VALIDATION_FAILED"),  # a cap has one
        (LIMIT_RULE | {"currency": None}, 422, "VALIDATION_FAILED"),
        (LIMIT_RULE | {"currency": "usd"}, 422, "VALIDATION_FAILED"),
        (LIMIT_RULE | {"currency": 840}, 422, "VALIDATION_FAILED"),
        (LIMIT_RULE | {"currency": "JPY"}, 422, "UNSUPPORTED_CURRENCY"),  # well formed, not the ledger's
        (LIMIT_RULE | {"currency": "XXX", "tag": "+66812345678"}, 422, "PII_REFUSED"),  # PII is told first
        ({k: v for k, v in LIMIT_RULE.items() if k != "max_count"}, 422, "VALIDATION_FAILED"),
        (LIMIT_RULE | {"period": "weekly"}, 422, "VALIDATION_FAILED"),
        (LIMIT_RULE | {"max_amount_minor": -1}, 422, "VALIDATION_FAILED"),
        (LIMIT_RULE | {"max_amount_minor": "500"}, 422, "VALIDATION_FAILED"),  # integers are integers
        (LIMIT_RULE | {"max_amount_minor": 2**60}, 422, "VALIDATION_FAILED"),
        (LIMIT_RULE | {"operation_type": "TELEPORT"}, 422, "VALIDATION_FAILED"),
        (LIMIT_RULE | {"operation_type": "ADMIN_ADJUSTMENT"}, 422, "VALIDATION_FAILED"),  # never limited
        (LIMIT_RULE | {"tag": "has space"}, 422, "VALIDATION_FAILED"),
    ],
)
async def test_a_bad_limit_rule_is_refused_and_nothing_is_written(
    gateway: Gateway, body: Any, status: int, code: str
) -> None:
    admin = await gateway.key(*ADMIN)
    response = await admin_send(gateway, admin, "POST", "/admin/limit-rules", body)
    assert await error_of(response) == (status, code)
    assert await audit_of(gateway, admin) == []


@pytest.mark.parametrize(("method", "body"), [("PUT", LIMIT_RULE), ("DELETE", None)])
@pytest.mark.parametrize("collection", ["limit-rules", "routes"])
@pytest.mark.parametrize("rule_id", ["999999999", "abc", "0", "99999999999999999999"])
async def test_an_unknown_id_is_404(gateway: Gateway, method: str, body: Any, collection: str, rule_id: str) -> None:
    admin = await gateway.key(*ADMIN)
    payload = route_body() if body is not None and collection == "routes" else body
    response = await admin_send(gateway, admin, method, f"/admin/{collection}/{rule_id}", payload)
    assert await error_of(response) == (404, "NOT_FOUND")


async def test_routes_are_created_replaced_and_disabled_and_a_taken_priority_is_409(gateway: Gateway) -> None:
    admin = await gateway.key(*ADMIN)
    first = await admin_send(gateway, admin, "POST", "/admin/routes", route_body())
    assert first.status == 201, await first.text()
    route = await first.json()
    assert (route["version"], route["channel"], route["enabled"]) == (1, "INTERNAL_P2P", False)
    clash = await admin_send(gateway, admin, "POST", "/admin/routes", route_body(priority=route["priority"]))
    assert await error_of(clash) == (409, "CONFLICT")
    second = await (await admin_send(gateway, admin, "POST", "/admin/routes", route_body())).json()
    moved = await admin_send(
        gateway, admin, "PUT", f"/admin/routes/{second['id']}", route_body(priority=route["priority"])
    )
    assert await error_of(moved) == (409, "CONFLICT")
    wider = route_body(priority=route["priority"], max_amount_minor=5_000)
    replaced = await admin_send(gateway, admin, "PUT", f"/admin/routes/{route['id']}", wider)
    assert replaced.status == 200
    assert ((await replaced.json())["version"], (await replaced.json())["max_amount_minor"]) == (2, 5_000)
    listed = await (await admin_send(gateway, admin, "GET", "/admin/routes")).json()
    assert {"P2P_TRANSFER", "ADMIN_ADJUSTMENT"} <= {item["operation_type"] for item in listed["items"]}
    await admin_send(gateway, admin, "PUT", f"/admin/routes/{route['id']}", wider | {"enabled": True})
    deleted = await (await admin_send(gateway, admin, "DELETE", f"/admin/routes/{route['id']}")).json()
    assert (deleted["enabled"], deleted["version"]) == (False, 4)

    audit = await audit_of(gateway, admin)
    assert [(a["entity_id"], a["action"]) for a in audit] == [
        (route["id"], "delete"), (route["id"], "update"), (route["id"], "update"), (second["id"], "create"),
        (route["id"], "create"),
    ]  # fmt: skip
    assert audit[2]["before"]["max_amount_minor"] == 1_000 and audit[2]["after"]["max_amount_minor"] == 5_000
    assert {a["entity"] for a in audit} == {"route"}


@pytest.mark.parametrize(
    "changes",
    [
        {"channel": "ADJUSTMENT"},  # exists, but does not carry P2P transfers
        {"channel": "NO_SUCH_CHANNEL"},
        {"operation_type": "TELEPORT"},
        {"min_amount_minor": 500, "max_amount_minor": 100},
        {"min_amount_minor": 0},
        {"priority": -1},
        {"enabled": "yes"},
        {"weight": 3},
        {"currencies": None},
    ],
)
async def test_a_bad_route_is_refused_with_422(gateway: Gateway, changes: dict[str, Any]) -> None:
    admin = await gateway.key(*ADMIN)
    response = await admin_send(gateway, admin, "POST", "/admin/routes", route_body(**changes))
    assert await error_of(response) == (422, "VALIDATION_FAILED")
    without_currencies = {name: value for name, value in route_body(**changes).items() if name != "currencies"}
    response = await admin_send(gateway, admin, "POST", "/admin/routes", without_currencies)
    assert await error_of(response) == (422, "VALIDATION_FAILED")  # required: no route serves "any"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"currencies": []}, "VALIDATION_FAILED"),  # a route serves some currency
        ({"currencies": "THB"}, "VALIDATION_FAILED"),  # a list
        ({"currencies": ["THB", "THB"]}, "VALIDATION_FAILED"),
        ({"currencies": ["THB", "USD", "EUR", "THB"]}, "VALIDATION_FAILED"),  # longer than the ledger's list
        ({"currencies": ["thb"]}, "VALIDATION_FAILED"),
        ({"currencies": [None]}, "VALIDATION_FAILED"),
        ({"currencies": ["THB", "JPY"]}, "UNSUPPORTED_CURRENCY"),  # not a ledger currency
        # IPPS carries baht only: a route taking USD payouts to it would hold money it can never pay out.
        ({"operation_type": "IPPS_WITHDRAWAL", "channel": "IPPS_TRANSFER", "currencies": ["USD"]},
         "UNSUPPORTED_CURRENCY"),
        ({"operation_type": "QP_TOPUP", "channel": "QP_TRANSFER", "currencies": ["THB", "EUR"]},
         "UNSUPPORTED_CURRENCY"),
    ],
)  # fmt: skip
async def test_a_route_with_currencies_it_cannot_serve_is_refused_and_nothing_is_written(
    gateway: Gateway, changes: dict[str, Any], code: str
) -> None:
    admin = await gateway.key(*ADMIN)
    body = route_body(**changes)
    assert await error_of(await admin_send(gateway, admin, "POST", "/admin/routes", body)) == (422, code)
    # A replace with the same body leaves the route as it was.
    good = route_body(**{**changes, "currencies": ["THB"]})
    created = await admin_send(gateway, admin, "POST", "/admin/routes", good)
    route = await created.json()
    assert created.status == 201, route
    path = f"/admin/routes/{route['id']}"
    replaced = await admin_send(gateway, admin, "PUT", path, body | {"priority": route["priority"]})
    assert await error_of(replaced) == (422, code)
    stored = await gateway.pool.fetchrow("SELECT version, currencies FROM pm.payment_route WHERE id = $1", route["id"])
    assert (stored["version"], stored["currencies"]) == (1, ["THB"])
    assert [(a["entity_id"], a["action"]) for a in await audit_of(gateway, admin)] == [(route["id"], "create")]


async def test_a_routes_currencies_are_stored_sorted_and_a_rules_currency_as_sent(gateway: Gateway) -> None:
    admin = await gateway.key(*ADMIN)
    created = await admin_send(gateway, admin, "POST", "/admin/routes", route_body(currencies=["USD", "EUR", "THB"]))
    assert created.status == 201 and (await created.json())["currencies"] == ["EUR", "THB", "USD"]
    rule = await admin_send(gateway, admin, "POST", "/admin/limit-rules", LIMIT_RULE | {"currency": "USD"})
    assert rule.status == 201 and (await rule.json())["currency"] == "USD"
    rule_id = (await rule.json())["id"]
    moved = await admin_send(gateway, admin, "PUT", f"/admin/limit-rules/{rule_id}", LIMIT_RULE | {"currency": "EUR"})
    assert (await moved.json())["currency"] == "EUR" and (await moved.json())["version"] == 2
    refused = await admin_send(gateway, admin, "PUT", f"/admin/limit-rules/{rule_id}", LIMIT_RULE | {"currency": "JPY"})
    assert await error_of(refused) == (422, "UNSUPPORTED_CURRENCY")
    stored = await gateway.pool.fetchrow("SELECT version, currency FROM pm.limit_rule WHERE id = $1", rule_id)
    assert tuple(stored) == (2, "EUR")
    await admin_send(gateway, admin, "DELETE", f"/admin/limit-rules/{rule_id}")  # keep enabled rules few


async def test_the_audit_pages_newest_first(gateway: Gateway) -> None:
    admin = await gateway.key(*ADMIN)
    ids = []
    for amount in (1_000, 2_000, 3_000):
        created = await admin_send(
            gateway, admin, "POST", "/admin/limit-rules", LIMIT_RULE | {"max_amount_minor": amount}
        )
        ids.append((await created.json())["id"])
        await admin_send(gateway, admin, "DELETE", f"/admin/limit-rules/{ids[-1]}")  # keep enabled rules few
    seen: list[dict[str, Any]] = []
    path = "/admin/audit?limit=2"
    for _ in range(100):
        page = await (await admin_send(gateway, admin, "GET", path)).json()
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        if page["next_before"] is None or len([s for s in seen if s["api_key_id"] == admin.key_id]) == 6:
            break
        path = f"/admin/audit?limit=2&before={page['next_before']}"
    mine = [s for s in seen if s["api_key_id"] == admin.key_id]
    assert [(s["entity_id"], s["action"]) for s in mine] == [
        (ids[2], "delete"), (ids[2], "create"), (ids[1], "delete"), (ids[1], "create"), (ids[0], "delete"),
        (ids[0], "create"),
    ]  # fmt: skip
    assert [s["id"] for s in seen] == sorted((s["id"] for s in seen), reverse=True)
    for query in ("limit=0", "limit=500", "limit=x", "before=-3"):
        assert await error_of(await admin_send(gateway, admin, "GET", f"/admin/audit?{query}")) == (
            422,
            "VALIDATION_FAILED",
        )


@pytest.mark.parametrize(("method", "path", "view", "name", "scope"), ADMIN_ROUTES)
async def test_a_key_without_the_admin_scope_is_403(gateway: Gateway, method, path, view, name, scope) -> None:
    key = await gateway.key()  # every scope but admin
    body = LIMIT_RULE if method in ("POST", "PUT") else None
    response = await admin_send(gateway, key, method, path.replace("{id}", "1"), body)
    assert await error_of(response) == (403, "FORBIDDEN")
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.admin_audit WHERE api_key_id = $1", key.key_id) == 0


async def test_the_caps_on_enabled_limit_rules_and_on_routes_are_409_with_nothing_written(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await gateway.key(*ADMIN)
    pool = gateway.pool
    # A tag no intent carries: the rule limits nothing even while enabled.
    quiet_rule = LIMIT_RULE | {"tag": f"cap-test-{random.randrange(10**9)}"}
    enabled = await pool.fetchval("SELECT count(*) FROM pm.limit_rule WHERE enabled")
    monkeypatch.setattr(limit_rules, "LIMIT_RULES_ENABLED_MAX", enabled)
    refused = await admin_send(gateway, admin, "POST", "/admin/limit-rules", quiet_rule)
    assert await error_of(refused) == (409, "CONFLICT")
    disabled = await admin_send(gateway, admin, "POST", "/admin/limit-rules", quiet_rule | {"enabled": False})
    assert disabled.status == 201  # a disabled rule takes no room
    rule_id = (await disabled.json())["id"]
    enabling = await admin_send(gateway, admin, "PUT", f"/admin/limit-rules/{rule_id}", quiet_rule)
    assert await error_of(enabling) == (409, "CONFLICT")
    monkeypatch.setattr(limit_rules, "LIMIT_RULES_ENABLED_MAX", enabled + 1)
    enabled_now = await admin_send(gateway, admin, "PUT", f"/admin/limit-rules/{rule_id}", quiet_rule)
    assert enabled_now.status == 200
    # Replacing a rule that is enabled already takes no more room, even at the cap.
    raised = await admin_send(gateway, admin, "PUT", f"/admin/limit-rules/{rule_id}", quiet_rule | {"max_count": 3})
    assert raised.status == 200 and (await raised.json())["version"] == 3
    await admin_send(gateway, admin, "DELETE", f"/admin/limit-rules/{rule_id}")

    routes = await pool.fetchval("SELECT count(*) FROM pm.payment_route")
    monkeypatch.setattr(payment_routes, "ROUTES_MAX", routes)
    assert await error_of(await admin_send(gateway, admin, "POST", "/admin/routes", route_body())) == (409, "CONFLICT")
    assert await pool.fetchval("SELECT count(*) FROM pm.payment_route") == routes

    audit = await audit_of(gateway, admin)
    assert [(a["entity"], a["action"]) for a in audit] == [
        ("limit_rule", "delete"), ("limit_rule", "update"), ("limit_rule", "update"), ("limit_rule", "create"),
    ]  # fmt: skip
