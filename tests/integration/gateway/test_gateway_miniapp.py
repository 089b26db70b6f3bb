"""POST /intents for mini-apps on real PostgreSQL and Valkey: MINIAPP_CHARGE and MINIAPP_CREDIT need a key
bound to a merchant (403 OPERATION_NOT_ALLOWED otherwise), the merchant comes from that key and never from
the body (a body naming one is 422), the user is X-User-Id (the sender of a charge, the recipient of a
credit), and every refusal writes nothing."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest

from pm.domain.intent import OperationType
from pm.redis import streams
from pm.store import intents as store
from pm.store import keys
from tests.support.gateway import Gateway, error_of, new_user, p2p_body

MINIAPP = ["MINIAPP_CHARGE", "MINIAPP_CREDIT"]


def new_merchant() -> int:
    return random.randrange(1, 10**12)


def miniapp_body(operation_type: str, amount_minor: int = 2_500, **extra: Any) -> bytes:
    return json.dumps(
        {"operation_type": operation_type, "amount_minor": amount_minor, "currency": "THB", **extra}
    ).encode()


@pytest.mark.parametrize("operation_type", MINIAPP)
async def test_a_key_without_a_merchant_is_forbidden_and_writes_nothing(gateway: Gateway, operation_type: str) -> None:
    key = await gateway.key()
    before = await gateway.stream_length()
    response = await gateway.post_intent(key, miniapp_body(operation_type), user_id=new_user())
    assert await error_of(response) == (403, "OPERATION_NOT_ALLOWED")
    assert "merchant" in (await response.json())["error"]["message"]
    assert await gateway.writes_by(key) == (0, 0)
    assert await gateway.stream_length() == before


@pytest.mark.parametrize("operation_type", MINIAPP)
async def test_a_body_naming_a_merchant_is_refused(gateway: Gateway, operation_type: str) -> None:
    merchant = new_merchant()
    key = await gateway.key(merchant_id=merchant)
    before = await gateway.stream_length()
    for named in (merchant, merchant + 1):  # not even the key's own: the body never carries one
        body = miniapp_body(operation_type, merchant_id=named)
        assert await error_of(await gateway.post_intent(key, body, user_id=new_user())) == (422, "VALIDATION_FAILED")
    assert await gateway.writes_by(key) == (0, 0)
    assert await gateway.stream_length() == before


@pytest.mark.parametrize(
    ("operation_type", "user_side"), [("MINIAPP_CHARGE", "sender_id"), ("MINIAPP_CREDIT", "recipient_id")]
)
async def test_a_merchant_key_creates_intents_of_its_own_merchant(
    gateway: Gateway, operation_type: str, user_side: str
) -> None:
    merchant = new_merchant()
    key = await gateway.key(merchant_id=merchant)
    user = new_user()
    before = await gateway.stream_length()
    response = await gateway.post_intent(key, miniapp_body(operation_type), user_id=user)
    assert response.status == 202, await response.text()
    answer = await response.json()
    other_side = "recipient_id" if user_side == "sender_id" else "sender_id"
    assert (answer["state"], answer["operation_type"], answer["amount_minor"]) == ("CREATED", operation_type, 2_500)
    assert (answer["merchant_id"], answer[user_side], answer[other_side]) == (merchant, user, None)

    intent = await store.load_intent(gateway.pool, uuid.UUID(answer["id"]))
    assert intent is not None and intent.to_json() == answer
    assert intent.operation_type == OperationType(operation_type) and intent.merchant_id == merchant
    assert await gateway.stream_length() == before + 1
    [(_, fields)] = await gateway.redis.xrevrange(gateway.topology.first_stage.stream, count=1)
    assert streams.decode_entry(fields) == intent
    assert await gateway.writes_by(key) == (1, 1)
    # The user is a party and may read it.
    read = await gateway.send("GET", f"/intents/{answer['id']}", key=key, user_id=user)
    assert read.status == 200 and (await read.json())["merchant_id"] == merchant


@pytest.mark.parametrize("operation_type", MINIAPP)
async def test_a_merchant_key_still_needs_the_user_and_no_recipient(gateway: Gateway, operation_type: str) -> None:
    key = await gateway.key(merchant_id=new_merchant())
    no_user = await gateway.post_intent(key, miniapp_body(operation_type), user_id=None)
    assert await error_of(no_user) == (400, "BAD_REQUEST")
    with_recipient = miniapp_body(operation_type, recipient_id=new_user())
    assert await error_of(await gateway.post_intent(key, with_recipient, user_id=new_user())) == (
        422,
        "INVALID_PARTY",
    )
    assert await gateway.writes_by(key) == (0, 0)


async def test_a_merchant_key_reads_only_its_own_merchants_intents(gateway: Gateway) -> None:
    """A merchant signs its own X-User-Id, so naming a user must not open that user's other intents: their
    transfers and other merchants' charges are 404 (as if they did not exist), events included; its own
    charge to that user reads as before."""
    merchant, other_merchant, user = new_merchant(), new_merchant(), new_user()
    own_key = await gateway.key(merchant_id=merchant)
    other_key = await gateway.key(merchant_id=other_merchant)
    app_key = await gateway.key()
    own = await gateway.post_intent(own_key, miniapp_body("MINIAPP_CHARGE"), user_id=user)
    others = await gateway.post_intent(other_key, miniapp_body("MINIAPP_CHARGE"), user_id=user)
    transfer = await gateway.post_intent(app_key, p2p_body(new_user()), user_id=user)
    assert (own.status, others.status, transfer.status) == (202, 202, 202)
    own_id, other_id, transfer_id = [(await answer.json())["id"] for answer in (own, others, transfer)]

    read = await gateway.send("GET", f"/intents/{own_id}", key=own_key, user_id=user)
    assert read.status == 200 and (await read.json())["merchant_id"] == merchant
    for intent_id in (other_id, transfer_id):
        for path in (f"/intents/{intent_id}", f"/intents/{intent_id}/events"):
            assert await error_of(await gateway.send("GET", path, key=own_key, user_id=user)) == (404, "NOT_FOUND")
    # The user's own key (the app's) still reads all three.
    for intent_id in (own_id, other_id, transfer_id):
        assert (await gateway.send("GET", f"/intents/{intent_id}", key=app_key, user_id=user)).status == 200


async def test_a_merchant_key_never_reads_a_users_balance_or_history(gateway: Gateway) -> None:
    """Refused at `pm keys create`; and a row that holds balance:read anyway (edited, or made before this
    rule) gets 403 on both routes."""
    merchant, user = new_merchant(), new_user()
    with pytest.raises(keys.ApiKeyError, match="balance:read"):
        await keys.create_key(gateway.pool, "shop", "intents:write,balance:read", merchant)
    key = await gateway.key(merchant_id=merchant)
    await gateway.pool.execute(
        "UPDATE pm.api_key SET scopes = array_append(scopes, 'balance:read') WHERE key_id = $1", key.key_id
    )
    holds = "SELECT 'balance:read' = ANY(scopes) FROM pm.api_key WHERE key_id = $1"
    assert await gateway.pool.fetchval(holds, key.key_id)
    for path in ("/api/pm/balance", "/api/pm/history"):
        assert await error_of(await gateway.send("GET", path, key=key, user_id=user)) == (403, "FORBIDDEN"), path
