"""Through the fleet as processes (two limits consumers): a limit rule created through the admin API holds
exactly while every limit key in Redis is deleted again and again in the middle of the run (streams
untouched), because missing counters are rebuilt from PostgreSQL; and the audit trail records the rule."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from pm.config.constants import LIMIT_KEY_PREFIX, RULES_POLL_INTERVAL_S
from tests.support.fleet import running_fleet

CAP_INTENTS = 20
AMOUNT_MINOR = 1_000


@pytest.fixture(scope="module")
async def fleet(fresh_database, redis_url):
    async with running_fleet(fresh_database, redis_url, counts={"limits": 2}) as running:
        yield running


async def flush_limit_keys(redis: aioredis.Redis) -> int:
    """Only the limit keys: the streams and their groups stay."""
    keys = [key async for key in redis.scan_iter(match=f"{LIMIT_KEY_PREFIX}*", count=1_000)]
    return await redis.delete(*keys) if keys else 0


async def test_a_limit_rule_holds_across_flushes_of_the_limit_keys(fleet) -> None:
    alice, bob = random.randrange(10**12, 10**14), random.randrange(10**14, 10**15)
    await fleet.fund(alice, 100_000)
    rule = (
        await fleet.admin.request(
            "POST",
            "/admin/limit-rules",
            body={"operation_type": "P2P_TRANSFER", "tag": None, "period": "daily",
                  "max_amount_minor": CAP_INTENTS * AMOUNT_MINOR, "max_count": None},
            user_id=77,
        )
    ).body  # fmt: skip
    assert rule["version"] == 1
    await asyncio.sleep(RULES_POLL_INTERVAL_S + 0.5)  # every limits process has read it

    async def pay() -> str:
        intent = await fleet.app.create_intent(
            operation_type="P2P_TRANSFER", amount_minor=AMOUNT_MINOR, currency="THB", user_id=alice, recipient_id=bob
        )
        return intent["id"]

    redis = aioredis.Redis.from_url(fleet.redis_url)
    try:
        first_wave = await asyncio.gather(*(pay() for _ in range(12)))
        await fleet.wait_finished(first_wave)
        assert await flush_limit_keys(redis) > 0

        async def keep_flushing() -> None:
            for _ in range(20):  # while the second wave is in flight
                await flush_limit_keys(redis)
                await asyncio.sleep(0.05)

        second_wave, _ = await asyncio.gather(asyncio.gather(*(pay() for _ in range(30))), keep_flushing())
        finished = await fleet.wait_finished([*first_wave, *second_wave])
        streams_left = [await redis.exists(stage.stream) for stage in fleet.topology.stages.values()]
    finally:
        await redis.aclose()

    states = [row["state"] for row in finished.values()]
    assert states.count("SETTLED") == CAP_INTENTS
    assert {row["error_code"] for row in finished.values() if row["state"] != "SETTLED"} == {"LIMIT_EXCEEDED"}
    assert await fleet.balance(bob) == (CAP_INTENTS * AMOUNT_MINOR, 0)
    assert all(streams_left)
    audit = (await fleet.admin.request("GET", "/admin/audit", query={"limit": "10"})).body["items"]
    assert any(a["entity"] == "limit_rule" and a["entity_id"] == rule["id"] and a["operator_id"] == 77 for a in audit)
    assert (await fleet.check()).ok
    assert (await fleet.reconcile()).mismatches == []
