"""The shared round trips on real Valkey and PostgreSQL: concurrent requests' Redis commands each get
their own reply (an error stays with its command, not its batch-mates), and stored responses of many
requests land in one statement, each on its own idempotency row and never over an earlier answer."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis.asyncio as aioredis
from gateway_support import Gateway, new_user
from redis.exceptions import ResponseError

from gateway.batching import RedisBatch, ResponseRecorder
from pm import intents as store
from pm.domain import OperationType


async def test_concurrent_commands_each_get_their_reply(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        batch = RedisBatch(client)
        counter, text = f"test:{uuid.uuid4().hex}:n", f"test:{uuid.uuid4().hex}:s"
        await client.set(text, b"not a number")
        replies = await asyncio.gather(
            *(batch.execute("INCR", counter) for _ in range(300)),
            batch.execute("INCR", text),
            return_exceptions=True,
        )
        assert sorted(replies[:300]) == list(range(1, 301))
        assert isinstance(replies[300], ResponseError)
        assert await batch.execute("GET", counter) == b"300"
    finally:
        await client.aclose()


async def test_a_lost_connection_fails_every_command_of_the_batch() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        batch = RedisBatch(client)
        replies = await asyncio.gather(*(batch.execute("PING") for _ in range(3)), return_exceptions=True)
        assert all(isinstance(reply, Exception) for reply in replies)
    finally:
        await client.aclose()


async def test_responses_are_stored_together_and_never_overwritten(gateway: Gateway) -> None:
    claims = []
    for _ in range(40):
        outcome = await store.create_intent(
            gateway.pool, api_key_id="batch-test", idempotency_key=uuid.uuid4().hex, request_hash=b"h",
            operation_type=OperationType.P2P_TRANSFER, amount_minor=100, currency="THB", sender_id=new_user(),
            recipient_id=new_user(), operator_id=None, tags=[],
        )  # fmt: skip
        assert outcome.created is not None
        claims.append(outcome.created)
    recorder = ResponseRecorder(gateway.pool)
    keys = await gateway.pool.fetch(
        "SELECT idempotency_key, intent_id FROM pm.idempotency WHERE intent_id = ANY($1::uuid[])",
        [claim.id for claim in claims],
    )
    by_intent = {row["intent_id"]: row["idempotency_key"] for row in keys}
    await asyncio.gather(
        *(recorder.record("batch-test", by_intent[claim.id], 202, claim.to_json()) for claim in claims)
    )
    # A second answer for the same key never replaces the first.
    await recorder.record("batch-test", by_intent[claims[0].id], 500, {"late": True})
    rows = await gateway.pool.fetch(
        "SELECT intent_id, response_status, response_body FROM pm.idempotency WHERE intent_id = ANY($1::uuid[])",
        [claim.id for claim in claims],
    )
    stored = {row["intent_id"]: (row["response_status"], json.loads(row["response_body"])) for row in rows}
    assert stored == {claim.id: (202, claim.to_json()) for claim in claims}


@pytest.mark.parametrize("count", [1, 700])
async def test_batches_are_bounded_and_every_waiter_is_answered(redis_url: str, count: int) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        batch = RedisBatch(client)
        replies = await asyncio.gather(*(batch.execute("PING") for _ in range(count)))
        assert replies == [True] * count
    finally:
        await client.aclose()
