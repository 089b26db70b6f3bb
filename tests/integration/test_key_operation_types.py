"""Proves, through the real gateway on a running pipeline (real PostgreSQL, Valkey, postgres ledger), that a
mini-app merchant's key cannot move any user's money (issue 10, item 1): P2P_TRANSFER, IPPS_WITHDRAWAL and
THAI_QR_PAY sent with it as a victim's X-User-Id, and their quotes, are 403 OPERATION_NOT_ALLOWED with
no intent and no idempotency record written, the victim's balance unchanged and the ledger clean, while
the same key still charges the user for its own merchant; a key may create only the types of its list;
and the table itself refuses a merchant key any other type."""

from __future__ import annotations

import json
import random
import uuid

import asyncpg
import pytest

from pm.domain.intent import State
from pm.store import allowances
from tests.support.gateway_pipeline import GatewayPipeline, error_of, gateway_on_pipeline

FUNDS_MINOR = 100_000  # 1,000.00 THB
STOLEN_MINOR = 90_000  # the 900.00 of the report
_ids = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


def new_id() -> int:
    return next(_ids)


def _token(user_id: int) -> str:
    """An opaque payee token naming the accomplice, in letters (a long digit run could read as PII)."""
    return "".join(chr(ord("a") + int(digit)) for digit in str(user_id))


THEFTS = {
    "P2P_TRANSFER": lambda accomplice: {"recipient_id": accomplice},
    "IPPS_WITHDRAWAL": lambda accomplice: {"destination_ref": f"acct-tok-{_token(accomplice)}"},
    "THAI_QR_PAY": lambda accomplice: {"destination_ref": f"qr-tok-{_token(accomplice)}"},
}


async def _assert_clean_ledger(world: GatewayPipeline) -> None:
    report = await world.pipeline.check()
    assert report.ok, report.problems
    assert [t.posted_net for t in report.transit] == [0]
    assert all(t.debits_posted == t.credits_posted for t in report.ledgers.values())


async def test_a_merchant_key_cannot_move_a_victims_money(fresh_database, redis_url) -> None:
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        victim, accomplice, merchant = new_id(), new_id(), new_id()
        funding = await pipeline.fund(victim, FUNDS_MINOR)
        await pipeline.wait_finished([funding.id])
        # Made the way an operator makes a mini-app's key: no --operations, so its merchant's two types.
        merchant_key = await world.key("intents:write,intents:read", None, merchant_id=merchant)

        for operation_type, party in THEFTS.items():
            body = {"operation_type": operation_type, "amount_minor": STOLEN_MINOR, "currency": "THB",
                    **party(accomplice)}  # fmt: skip
            refused = await world.post_intent(merchant_key, body, user_id=victim)
            assert await error_of(refused) == (403, "OPERATION_NOT_ALLOWED"), operation_type
            quote_body = json.dumps(body).encode()
            quoted = await world.send("POST", "/quote", key=merchant_key, body=quote_body, user_id=victim)
            assert await error_of(quoted) == (403, "OPERATION_NOT_ALLOWED"), operation_type
        assert await world.writes_by(merchant_key) == (0, 0)  # no intent row, no idempotency record
        rows = await pipeline.context.pool.fetchval(
            "SELECT count(*) FROM pm.intent WHERE $1 IN (sender_id, recipient_id) OR $2 IN (sender_id, recipient_id)",
            victim,
            accomplice,
        )
        assert rows == 1  # only the victim's funding
        assert await pipeline.balance(victim) == (FUNDS_MINOR, 0)

        # The key is not simply broken: it charges the user for its own merchant, which settles (within
        # the allowance the user granted that merchant; without one it would wait for the user's consent).
        await allowances.grant(pipeline.context.pool, victim, merchant, "THB", 2_500)
        charge = await world.post_intent(
            merchant_key, {"operation_type": "MINIAPP_CHARGE", "amount_minor": 2_500, "currency": "THB"},
            user_id=victim,
        )  # fmt: skip
        assert charge.status == 202, await charge.text()
        charge_id = uuid.UUID((await charge.json())["id"])
        assert (await pipeline.wait_finished([charge_id]))[charge_id].state == State.SETTLED
        assert await pipeline.balance(victim) == (FUNDS_MINOR - 2_500, 0)
        assert await pipeline.balance(accomplice) == (0, 0)
        await _assert_clean_ledger(world)


async def test_a_key_creates_only_the_types_of_its_list(fresh_database, redis_url) -> None:
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        user, other = new_id(), new_id()
        await pipeline.wait_finished([(await pipeline.fund(user, FUNDS_MINOR)).id])
        topups_only = await world.key("intents:write,intents:read", "QP_TOPUP")
        p2p = {"operation_type": "P2P_TRANSFER", "amount_minor": 1_000, "currency": "THB", "recipient_id": other}
        refused = await world.post_intent(topups_only, p2p, user_id=user)
        assert await error_of(refused) == (403, "OPERATION_NOT_ALLOWED")
        assert "P2P_TRANSFER" in (await refused.json())["error"]["message"]
        assert await world.writes_by(topups_only) == (0, 0)
        # An admin key without ADMIN_ADJUSTMENT in its list may not adjust either.
        admin = await world.key("admin", "P2P_TRANSFER")
        adjust = {"operation_type": "ADMIN_ADJUSTMENT", "amount_minor": 1_000, "currency": "THB", "recipient_id": user}
        assert await error_of(await world.post_intent(admin, adjust, user_id=1)) == (403, "OPERATION_NOT_ALLOWED")
        paid = await world.post_intent(admin, p2p, user_id=user)
        assert paid.status == 202
        paid_id = uuid.UUID((await paid.json())["id"])
        assert (await pipeline.wait_finished([paid_id]))[paid_id].state == State.SETTLED
        assert (await pipeline.balance(user), await pipeline.balance(other)) == ((FUNDS_MINOR - 1_000, 0), (1_000, 0))
        await _assert_clean_ledger(world)


async def test_the_table_refuses_a_merchant_key_other_types(postgres_url: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        insert = (
            "INSERT INTO pm.api_key (key_id, name, scopes, operations, secret, merchant_id)"
            " VALUES ($1, 'x', '{intents:write}', $2, 's', $3)"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(insert, f"pmk_t{new_id()}", ["MINIAPP_CHARGE", "P2P_TRANSFER"], 5)
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(insert, f"pmk_t{new_id()}", ["MINIAPP_CREDIT"], None)
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(insert, f"pmk_t{new_id()}", ["p2p transfer"], None)
        await connection.execute(insert, f"pmk_t{new_id()}", ["MINIAPP_CHARGE", "MINIAPP_CREDIT"], 5)
    finally:
        await connection.close()
