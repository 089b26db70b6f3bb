"""Proves that a tag or destination_ref that looks like personal data (pm/domain/pii.py) is refused 422
PII_REFUSED in every request that carries one — POST /intents, POST /quote, limit rules (create and
replace) — and in a fee rule's name and expression text, before any other check of the field, without
echoing the value, and with nothing written: no intent row, no idempotency row, no stream entry, no
rule row, no audit row. Machine words still pass."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.gateway import ADMIN, Gateway, Key, new_user

P2P_BODY = {"operation_type": "P2P_TRANSFER", "amount_minor": 10_000, "currency": "THB"}
PAYOUT_BODY = {"operation_type": "IPPS_WITHDRAWAL", "amount_minor": 10_000, "currency": "THB"}
# (body change, the value that must never be echoed), one per kind of personal data and place.
PII_INTENTS = [
    ({"metadata": {"tags": ["kyc_verified", "+66812345678"]}}, "+66812345678"),  # the pattern refuses `+`
    ({"metadata": {"tags": ["a@b.co"]}}, "a@b.co"),  # and `@`
    ({"metadata": {"tags": ["0812345678"]}}, "0812345678"),
    ({"metadata": {"tags": ["081-234-5678"]}}, "081-234-5678"),
    ({"metadata": {"tags": ["1-2345-67890-12-3"]}}, "1-2345-67890-12-3"),
    ({"metadata": {"tags": ["name:Somchai"]}}, "Somchai"),
    ({"metadata": {"tags": ["first_name:Somchai"]}}, "Somchai"),
]
PII_DESTINATIONS = [
    ("0812345678", "0812345678"),
    ("acct:0812345678", "0812345678"),
    ("tok_1234567890123", "1234567890123"),
    ("somchai@example.co.th", "somchai@example.co.th"),
    ("passport:AA1234567", "AA1234567"),
]
LIMIT_RULE = {"currency": "THB", "operation_type": "P2P_TRANSFER", "period": "daily", "max_amount_minor": 50_000,
              "max_count": None}  # fmt: skip


async def refusal(response: Any, never_echoed: str) -> None:
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (422, "PII_REFUSED"), body
    assert never_echoed not in body["error"]["message"]
    assert "personal data" in body["error"]["message"]


async def admin_send(gateway: Gateway, key: Key, method: str, path: str, body: Any) -> Any:
    return await gateway.send(method, path, key=key, body=json.dumps(body).encode(), user_id=7)


async def audit_rows(gateway: Gateway, key: Key) -> int:
    return await gateway.pool.fetchval("SELECT count(*) FROM pm.admin_audit WHERE api_key_id = $1", key.key_id)


@pytest.mark.parametrize(("change", "never_echoed"), PII_INTENTS)
async def test_a_tag_that_looks_like_pii_is_refused_by_post_intents_and_quote(
    gateway: Gateway, change: dict[str, Any], never_echoed: str
) -> None:
    key = await gateway.key()
    before = await gateway.stream_length()
    body = json.dumps({**P2P_BODY, "recipient_id": new_user(), **change}).encode()
    await refusal(await gateway.post_intent(key, body, user_id=new_user()), never_echoed)
    await refusal(await gateway.send("POST", "/quote", key=key, body=body, user_id=new_user()), never_echoed)
    assert await gateway.writes_by(key) == (0, 0)
    assert await gateway.stream_length() == before


@pytest.mark.parametrize(("destination_ref", "never_echoed"), PII_DESTINATIONS)
async def test_a_destination_ref_that_looks_like_pii_is_refused_by_post_intents_and_quote(
    gateway: Gateway, destination_ref: str, never_echoed: str
) -> None:
    key = await gateway.key()
    before = await gateway.stream_length()
    body = json.dumps({**PAYOUT_BODY, "destination_ref": destination_ref}).encode()
    await refusal(await gateway.post_intent(key, body, user_id=new_user()), never_echoed)
    await refusal(await gateway.send("POST", "/quote", key=key, body=body, user_id=new_user()), never_echoed)
    assert await gateway.writes_by(key) == (0, 0)
    assert await gateway.stream_length() == before


async def test_machine_tags_and_opaque_tokens_still_pass(gateway: Gateway) -> None:
    key = await gateway.key()
    tags = ["kyc_verified", "risk:low", "tier:2", "campaign:2026-12", "email_verified", "v1.2.3"]
    tagged = json.dumps({**P2P_BODY, "recipient_id": new_user(), "metadata": {"tags": tags}}).encode()
    assert (await gateway.post_intent(key, tagged, user_id=new_user())).status == 202
    payout = json.dumps({**PAYOUT_BODY, "destination_ref": "dst_9f8a0812345678cafe"}).encode()
    assert (await gateway.post_intent(key, payout, user_id=new_user())).status == 202
    assert await gateway.writes_by(key) == (2, 2)


@pytest.mark.parametrize("tag", ["+66812345678", "0812345678", "a@b.co", "name:Somchai", "3100600123456"])
async def test_a_limit_rule_tag_that_looks_like_pii_is_refused_on_create_and_replace(
    gateway: Gateway, tag: str
) -> None:
    admin = await gateway.key(*ADMIN)
    rules_before = await gateway.pool.fetchval("SELECT count(*) FROM pm.limit_rule")
    await refusal(await admin_send(gateway, admin, "POST", "/admin/limit-rules", LIMIT_RULE | {"tag": tag}), tag)
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.limit_rule") == rules_before
    assert await audit_rows(gateway, admin) == 0

    created = await admin_send(gateway, admin, "POST", "/admin/limit-rules", LIMIT_RULE | {"tag": "kyc_verified"})
    assert created.status == 201
    rule = await created.json()
    path = f"/admin/limit-rules/{rule['id']}"
    await refusal(await admin_send(gateway, admin, "PUT", path, LIMIT_RULE | {"tag": tag}), tag)
    stored = await gateway.pool.fetchrow("SELECT version, tag FROM pm.limit_rule WHERE id = $1", rule["id"])
    assert tuple(stored) == (1, "kyc_verified")
    assert await audit_rows(gateway, admin) == 1  # the create only
    await admin_send(gateway, admin, "DELETE", path, None)


def fee_rule(sender: int, **changes: Any) -> dict[str, Any]:
    return {
        "name": "one percent", "currency": "THB", "operation_type": "P2P_TRANSFER", "channel": None,
        "condition": f"sender_id == {sender}", "amount": "amount / 100", "kind": "PRE", "priority": 10,
        "min_fee_minor": 0, "max_fee_minor": None, "valid_from": None, "valid_to": None, "enabled": False,
        **changes,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "never_echoed"),
    [
        ({"condition": "'0812345678' in tags"}, "0812345678"),
        ({"condition": '"name:Somchai" in tags'}, "Somchai"),
        ({"condition": "true // for somchai@example.co.th"}, "somchai@example.co.th"),
        ({"amount": "'+66812345678' in tags ? 0 : amount / 100"}, "+66812345678"),
        ({"name": "fee for 081-234-5678"}, "081-234-5678"),
    ],
)
async def test_a_fee_rule_whose_text_looks_like_pii_is_refused_with_nothing_written(
    gateway: Gateway, change: dict[str, Any], never_echoed: str
) -> None:
    admin = await gateway.key(*ADMIN)
    sender = new_user()
    rules_before = await gateway.pool.fetchval("SELECT count(*) FROM pm.fee_rule")
    body = fee_rule(sender, **change)
    await refusal(await admin_send(gateway, admin, "POST", "/admin/fee-rules", body), never_echoed)
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.fee_rule") == rules_before

    created = await admin_send(gateway, admin, "POST", "/admin/fee-rules", fee_rule(sender, condition="'vip' in tags"))
    assert created.status == 201, await created.text()
    rule_id = (await created.json())["id"]
    await refusal(await admin_send(gateway, admin, "PUT", f"/admin/fee-rules/{rule_id}", body), never_echoed)
    assert await gateway.pool.fetchval("SELECT version FROM pm.fee_rule WHERE id = $1", rule_id) == 1
    assert await audit_rows(gateway, admin) == 1
