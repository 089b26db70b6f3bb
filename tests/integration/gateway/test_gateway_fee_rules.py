"""The fee-rule admin API and POST /quote on real PostgreSQL: rules are created, listed, replaced and
disabled as new versions with every version kept, an audit row each and a new rule generation; a null
`min_fee_minor` is 0 and a null `max_fee_minor` no maximum, as saved, shown and priced; a rule that
does not compile, or whose cost is not bounded, is refused with 400 RULE_INVALID and the compiler's
message, with nothing written;
and a quote prices with the current rules, creates nothing, and refuses as the pipeline would."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pm.store import fee_rules
from pm.store.audit import current_rule_generation
from tests.support.gateway import ADMIN, Gateway, Key, error_of, new_user, p2p_body


def rule_body(sender_id: int, **changes: Any) -> dict[str, Any]:
    """A rule that applies only to this test's sender: tests share the session's database."""
    return {
        "name": "one percent",
        "currency": "THB",
        "operation_type": "P2P_TRANSFER",
        "channel": None,
        "condition": f"sender_id == {sender_id}",
        "amount": "amount / 100",
        "kind": "PRE",
        "priority": 10,
        "min_fee_minor": 0,
        "max_fee_minor": None,
        "valid_from": None,
        "valid_to": None,
        "enabled": True,
        **changes,
    }


async def admin_send(gateway: Gateway, key: Key, method: str, path: str, body: Any = None, operator: int = 7):
    payload = json.dumps(body).encode() if body is not None else b""
    return await gateway.send(method, path, key=key, body=payload, user_id=operator)


async def audit_rows(gateway: Gateway, rule_id: int) -> list[dict[str, Any]]:
    rows = await gateway.pool.fetch(
        "SELECT api_key_id, operator_id, action, before, after FROM pm.admin_audit"
        " WHERE entity = 'fee_rule' AND entity_id = $1 ORDER BY id",
        rule_id,
    )
    return [
        {**dict(row), "before": json.loads(row["before"] or "null"), "after": json.loads(row["after"] or "null")}
        for row in rows
    ]


async def test_create_list_replace_disable_keeps_versions_audit_and_bumps_the_generation(gateway: Gateway) -> None:
    admin = await gateway.key(*ADMIN)
    sender = new_user()
    generation = await current_rule_generation(gateway.pool)

    created = await admin_send(gateway, admin, "POST", "/admin/fee-rules", rule_body(sender), operator=42)
    assert created.status == 201, await created.text()
    rule = await created.json()
    assert (rule["version"], rule["enabled"], rule["kind"], rule["amount"]) == (1, True, "PRE", "amount / 100")
    rule_id = rule["id"]

    listed = await (await admin_send(gateway, admin, "GET", "/admin/fee-rules")).json()
    assert any(r["id"] == rule_id and r["version"] == 1 for r in listed["items"])

    replaced = await admin_send(
        gateway, admin, "PUT", f"/admin/fee-rules/{rule_id}", rule_body(sender, amount="amount / 50", priority=5)
    )
    assert replaced.status == 200
    assert {k: (await replaced.json())[k] for k in ("version", "amount", "priority")} == {
        "version": 2, "amount": "amount / 50", "priority": 5,
    }  # fmt: skip

    disabled = await admin_send(gateway, admin, "DELETE", f"/admin/fee-rules/{rule_id}")
    assert disabled.status == 200 and (await disabled.json())["enabled"] is False
    again = await admin_send(gateway, admin, "DELETE", f"/admin/fee-rules/{rule_id}")
    assert (await again.json())["version"] == 3  # disabling a disabled rule changes nothing

    history = await (await admin_send(gateway, admin, "GET", f"/admin/fee-rules/{rule_id}")).json()
    assert (history["version"], history["enabled"]) == (3, False)
    assert [(v["version"], v["definition"]["amount"], v["definition"]["enabled"]) for v in history["versions"]] == [
        (3, "amount / 50", False),
        (2, "amount / 50", True),
        (1, "amount / 100", True),
    ]
    audit = await audit_rows(gateway, rule_id)
    assert [(a["action"], a["api_key_id"], a["operator_id"]) for a in audit] == [
        ("create", admin.key_id, 42), ("update", admin.key_id, 7), ("delete", admin.key_id, 7),
    ]  # fmt: skip
    assert audit[0]["before"] is None and audit[0]["after"]["version"] == 1
    assert (audit[1]["before"]["amount"], audit[1]["after"]["amount"]) == ("amount / 100", "amount / 50")
    assert (audit[2]["before"]["enabled"], audit[2]["after"]["enabled"]) == (True, False)
    assert await current_rule_generation(gateway.pool) >= generation + 3


_ZEROS = "[" + ",".join(["0"] * 220) + "]"
SLOW_CHAINED_CONDITION = f"{_ZEROS}.map(x, {_ZEROS}).map(y, " + "+".join(["y"] * 25) + ").size() < 0"
assert len(SLOW_CHAINED_CONDITION) == 960, len(SLOW_CHAINED_CONDITION)  # under the default 1,000


@pytest.mark.parametrize(
    ("changes", "status", "code", "message"),
    [
        ({"amount": "amount + 'x'"}, 400, "RULE_INVALID", "amount: ERROR: <input>:1:8: found no matching overload"),
        ({"condition": "amount"}, 400, "RULE_INVALID", "condition: the expression gives int; it must give bool"),
        ({"amount": "double(amount) * 0.01"}, 400, "RULE_INVALID", "amount: the expression gives double"),
        ({"condition": "nosuch == 1"}, 400, "RULE_INVALID", "undeclared reference to 'nosuch'"),
        ({"amount": "amount +"}, 400, "RULE_INVALID", "Syntax error"),
        ({"amount": "1 + " * 300 + "1"}, 400, "RULE_INVALID", "at most 1000"),
        ({"condition": "tags.exists(t, tags.exists(u, u == t))"}, 400, "RULE_INVALID", "inside another"),
        # Chained comprehensions with concatenation in the second body: 960 characters that cost ~1 s and
        # ~0.5 GB per evaluation before ranges and bodies were bounded (pm/domain/cel/base.py).
        ({"condition": SLOW_CHAINED_CONDITION}, 400, "RULE_INVALID", "may range only over"),
        ({"condition": "[0, 1].map(x, [x] + [x]).size() > 0"}, 400, "RULE_INVALID", "'+' is not allowed"),
        ({"condition": "tags.exists(t, t.matches('^(a|t){100}'))"}, 400, "RULE_INVALID", "matches is not allowed"),
        ({"surprise": 1}, 422, "VALIDATION_FAILED", "surprise"),
        ({"kind": "DURING"}, 422, "VALIDATION_FAILED", "kind"),
        ({"priority": "1"}, 422, "VALIDATION_FAILED", "priority"),
        ({"operation_type": "NOPE"}, 422, "VALIDATION_FAILED", "unknown operation_type"),
        ({"operation_type": "ADMIN_ADJUSTMENT"}, 422, "VALIDATION_FAILED", "never priced"),
        ({"channel": "ADJUSTMENT"}, 422, "VALIDATION_FAILED", "never priced"),
        ({"operation_type": "THAI_QR_PAY", "channel": "INTERNAL_P2P"}, 422, "VALIDATION_FAILED", "does not carry"),
        ({"min_fee_minor": 10, "max_fee_minor": 5}, 422, "VALIDATION_FAILED", "max_fee_minor"),
        ({"min_fee_minor": None, "max_fee_minor": -1}, 422, "VALIDATION_FAILED", "max_fee_minor"),
        ({"min_fee_minor": "0"}, 422, "VALIDATION_FAILED", "min_fee_minor"),
        ({"min_fee_minor": -1}, 422, "VALIDATION_FAILED", "min_fee_minor"),
        ({"valid_from": "2026-01-02T00:00:00+07:00", "valid_to": "2026-01-01T00:00:00+07:00"}, 422,
         "VALIDATION_FAILED", "valid_to"),
        ({"valid_from": "2026-01-01T00:00:00"}, 422, "VALIDATION_FAILED", "timezone"),
    ],
)  # fmt: skip
async def test_a_bad_rule_is_refused_with_nothing_written(gateway: Gateway, changes, status, code, message) -> None:
    admin = await gateway.key(*ADMIN)
    before = await gateway.pool.fetchval("SELECT count(*) FROM pm.fee_rule")
    response = await admin_send(gateway, admin, "POST", "/admin/fee-rules", rule_body(new_user(), **changes))
    error = (await response.json())["error"]
    assert (response.status, error["code"]) == (status, code)
    assert message in error["message"]
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.fee_rule") == before


@pytest.mark.parametrize(
    ("currency", "status", "code"),
    [
        (None, 422, "VALIDATION_FAILED"),  # omitted: a fee bound means nothing without its currency
        ("thb", 422, "VALIDATION_FAILED"),
        ("XYZ", 422, "UNSUPPORTED_CURRENCY"),  # well formed, not the ledger's (as for limit rules)
        ("JPY", 422, "UNSUPPORTED_CURRENCY"),
    ],
)
async def test_a_rule_without_a_ledger_currency_is_refused_with_nothing_written(
    gateway: Gateway, currency: str | None, status: int, code: str
) -> None:
    admin = await gateway.key(*ADMIN)
    before = await gateway.pool.fetchval("SELECT count(*) FROM pm.fee_rule")
    body = rule_body(new_user())
    if currency is None:
        del body["currency"]
    else:
        body["currency"] = currency
    response = await admin_send(gateway, admin, "POST", "/admin/fee-rules", body)
    error = (await response.json())["error"]
    assert (response.status, error["code"]) == (status, code)
    assert "currency" in error["message"]
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.fee_rule") == before
    # Nor can a replace leave it out and keep (or lose) the rule's currency.
    created = await (await admin_send(gateway, admin, "POST", "/admin/fee-rules", rule_body(new_user()))).json()
    replaced = await admin_send(gateway, admin, "PUT", f"/admin/fee-rules/{created['id']}", body)
    assert (replaced.status, (await replaced.json())["error"]["code"]) == (status, code)
    current = await (await admin_send(gateway, admin, "GET", f"/admin/fee-rules/{created['id']}")).json()
    assert (current["version"], current["currency"]) == (1, "THB")


async def test_unknown_rules_are_404_and_the_admin_scope_is_required(gateway: Gateway) -> None:
    admin, app_key = await gateway.key(*ADMIN), await gateway.key()
    assert await error_of(await admin_send(gateway, admin, "PUT", "/admin/fee-rules/999999999", rule_body(1))) == (
        404, "NOT_FOUND",
    )  # fmt: skip
    assert await error_of(await admin_send(gateway, admin, "DELETE", "/admin/fee-rules/999999999")) == (
        404,
        "NOT_FOUND",
    )
    assert await error_of(await admin_send(gateway, admin, "GET", "/admin/fee-rules/x1")) == (404, "NOT_FOUND")
    refused = await admin_send(gateway, app_key, "POST", "/admin/fee-rules", rule_body(1))
    assert await error_of(refused) == (403, "FORBIDDEN")


async def test_a_bad_rule_on_replace_keeps_the_current_version(gateway: Gateway) -> None:
    admin = await gateway.key(*ADMIN)
    sender = new_user()
    rule_id = (await (await admin_send(gateway, admin, "POST", "/admin/fee-rules", rule_body(sender))).json())["id"]
    broken = rule_body(sender, amount="amount / 'x'")
    assert await error_of(await admin_send(gateway, admin, "PUT", f"/admin/fee-rules/{rule_id}", broken)) == (
        400, "RULE_INVALID",
    )  # fmt: skip
    current = await (await admin_send(gateway, admin, "GET", f"/admin/fee-rules/{rule_id}")).json()
    assert current["version"] == 1 and len(current["versions"]) == 1


async def test_null_min_and_max_fees_mean_zero_and_no_maximum(gateway: Gateway) -> None:
    admin, app_key = await gateway.key(*ADMIN), await gateway.key()
    sender, other_sender = new_user(), new_user()
    saved = await admin_send(
        gateway, admin, "POST", "/admin/fee-rules", rule_body(sender, min_fee_minor=None, max_fee_minor=None)
    )
    assert saved.status == 201, await saved.text()
    rule = await saved.json()
    # A null minimum is stored and answered as 0; a null maximum stays null (no maximum).
    assert (rule["min_fee_minor"], rule["max_fee_minor"]) == (0, None)
    shown = await (await admin_send(gateway, admin, "GET", f"/admin/fee-rules/{rule['id']}")).json()
    assert (shown["min_fee_minor"], shown["max_fee_minor"]) == (0, None)
    definition = shown["versions"][0]["definition"]
    assert (definition["min_fee_minor"], definition["max_fee_minor"]) == (0, None)
    row = await gateway.pool.fetchrow("SELECT min_fee_minor, max_fee_minor FROM pm.fee_rule WHERE id = $1", rule["id"])
    assert tuple(row) == (0, None)

    omitted_body = rule_body(other_sender)
    del omitted_body["min_fee_minor"], omitted_body["max_fee_minor"]
    omitted = await (await admin_send(gateway, admin, "POST", "/admin/fee-rules", omitted_body)).json()
    assert (omitted["min_fee_minor"], omitted["max_fee_minor"]) == (0, None)

    # Priced with no floor and no ceiling: 1 % of 5,000,000 and of 50.
    large = await (await quote(gateway, app_key, sender, 5_000_000)).json()
    assert (large["fee_pre_minor"], large["sender_debit_minor"]) == (50_000, 5_050_000)
    assert (await (await quote(gateway, app_key, sender, 50)).json())["fee_pre_minor"] == 0

    # Back to null after a minimum: 0 again, as a new version.
    path = f"/admin/fee-rules/{rule['id']}"
    raised = await admin_send(gateway, admin, "PUT", path, rule_body(sender, min_fee_minor=500, max_fee_minor=None))
    assert (await raised.json())["min_fee_minor"] == 500
    assert (await (await quote(gateway, app_key, sender, 50)).json())["fee_pre_minor"] == 500
    cleared = await admin_send(gateway, admin, "PUT", path, rule_body(sender, min_fee_minor=None))
    assert {k: (await cleared.json())[k] for k in ("version", "min_fee_minor", "max_fee_minor")} == {
        "version": 3, "min_fee_minor": 0, "max_fee_minor": None,
    }  # fmt: skip
    assert (await (await quote(gateway, app_key, sender, 50)).json())["fee_pre_minor"] == 0


async def quote(gateway: Gateway, key: Key, sender: int, amount_minor: int, **extra: Any):
    return await gateway.send(
        "POST", "/quote", key=key, body=p2p_body(new_user(), amount_minor, **extra), user_id=sender
    )


async def test_quote_prices_with_the_current_rules_and_creates_nothing(gateway: Gateway) -> None:
    admin, app_key = await gateway.key(*ADMIN), await gateway.key()
    sender = new_user()
    answer = await quote(gateway, app_key, sender, 10_000)
    assert answer.status == 200, await answer.text()
    assert await answer.json() == {
        "fee_pre_minor": 0, "fee_post_minor": 0, "sender_debit_minor": 10_000, "recipient_credit_minor": 10_000,
        "rules": [],
    }  # fmt: skip

    pre = await (await admin_send(gateway, admin, "POST", "/admin/fee-rules", rule_body(sender))).json()
    post_body = rule_body(sender, kind="POST", amount="25", condition=f"sender_id == {sender} && 'vip' in tags")
    post = await (await admin_send(gateway, admin, "POST", "/admin/fee-rules", post_body)).json()
    answer = await quote(gateway, app_key, sender, 10_000, metadata={"tags": ["vip"]})
    assert await answer.json() == {
        "fee_pre_minor": 100, "fee_post_minor": 25, "sender_debit_minor": 10_100, "recipient_credit_minor": 9_975,
        "rules": [
            {"id": pre["id"], "version": 1, "kind": "PRE", "fee_minor": 100},
            {"id": post["id"], "version": 1, "kind": "POST", "fee_minor": 25},
        ],
    }  # fmt: skip
    assert (await (await quote(gateway, app_key, sender, 10_000)).json())["fee_post_minor"] == 0  # no vip tag
    assert await gateway.writes_by(app_key) == (0, 0)

    too_small = await quote(gateway, app_key, sender, 20, metadata={"tags": ["vip"]})
    assert await error_of(too_small) == (422, "FEE_EXCEEDS_AMOUNT")


async def test_quote_refuses_on_a_rule_that_fails_and_as_post_intents_does(gateway: Gateway) -> None:
    admin, app_key = await gateway.key(*ADMIN), await gateway.key()
    sender = new_user()
    failing = rule_body(sender, condition=f"sender_id == {sender} && amount / (amount - 500) > 0")
    rule_id = (await (await admin_send(gateway, admin, "POST", "/admin/fee-rules", failing)).json())["id"]
    refused = await quote(gateway, app_key, sender, 500)
    assert await error_of(refused) == (422, "FEE_RULE_ERROR")
    assert f"fee rule {rule_id}" in (await (await quote(gateway, app_key, sender, 500)).json())["error"]["message"]
    assert (await quote(gateway, app_key, sender, 501)).status == 200

    same_party = await gateway.send("POST", "/quote", key=app_key, body=p2p_body(sender), user_id=sender)
    assert await error_of(same_party) == (422, "SAME_PARTY")
    no_sender = await gateway.send("POST", "/quote", key=app_key, body=p2p_body(sender))
    assert await error_of(no_sender) == (400, "BAD_REQUEST")
    not_json = await gateway.send("POST", "/quote", key=app_key, body=b"{", user_id=sender)
    assert await error_of(not_json) == (400, "BAD_REQUEST")


async def test_quote_refuses_a_currency_no_route_serves_as_validation_does(gateway: Gateway) -> None:
    app_key, sender = await gateway.key(), new_user()
    payout = {"operation_type": "IPPS_WITHDRAWAL", "amount_minor": 5_000, "destination_ref": "tok_quote"}
    dollars = await gateway.send(
        "POST", "/quote", key=app_key, body=json.dumps(payout | {"currency": "USD"}).encode(), user_id=sender
    )
    assert await error_of(dollars) == (422, "UNSUPPORTED_CURRENCY")  # IPPS's route serves THB only
    assert "serves USD; routes serve THB" in (await dollars.json())["error"]["message"]
    baht = await gateway.send(
        "POST", "/quote", key=app_key, body=json.dumps(payout | {"currency": "THB"}).encode(), user_id=sender
    )
    assert baht.status == 200, await baht.text()
    usd_body = p2p_body(new_user(), currency="USD")
    usd_p2p = await gateway.send("POST", "/quote", key=app_key, body=usd_body, user_id=sender)
    assert usd_p2p.status == 200  # wallet to wallet carries every ledger currency


async def test_the_cap_on_enabled_fee_rules_is_409_with_nothing_written(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await gateway.key(*ADMIN)
    sender = new_user()
    enabled = await gateway.pool.fetchval("SELECT count(*) FROM pm.fee_rule WHERE enabled")
    rules = await gateway.pool.fetchval("SELECT count(*) FROM pm.fee_rule")
    monkeypatch.setattr(fee_rules, "FEE_RULES_ENABLED_MAX", enabled)
    refused = await admin_send(gateway, admin, "POST", "/admin/fee-rules", rule_body(sender))
    assert await error_of(refused) == (409, "CONFLICT")
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.fee_rule") == rules
    disabled = await admin_send(gateway, admin, "POST", "/admin/fee-rules", rule_body(sender, enabled=False))
    assert disabled.status == 201  # a disabled rule takes no room
    rule_id = (await disabled.json())["id"]
    enabling = await admin_send(gateway, admin, "PUT", f"/admin/fee-rules/{rule_id}", rule_body(sender))
    assert await error_of(enabling) == (409, "CONFLICT")
    monkeypatch.setattr(fee_rules, "FEE_RULES_ENABLED_MAX", enabled + 1)
    enabled_now = await admin_send(gateway, admin, "PUT", f"/admin/fee-rules/{rule_id}", rule_body(sender))
    assert enabled_now.status == 200 and (await enabled_now.json())["version"] == 2
    assert [row["action"] for row in await audit_rows(gateway, rule_id)] == ["create", "update"]
    await admin_send(gateway, admin, "DELETE", f"/admin/fee-rules/{rule_id}")
