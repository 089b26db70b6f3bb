"""Through the fleet as processes (two limits consumers): a limit rule created through the admin API holds
exactly while every limit key in Redis is deleted again and again in the middle of the run (streams
untouched), because missing counters are rebuilt from PostgreSQL; and the audit trail records the rule.
With both currencies: a USD rule caps a user's USD transfers and never their THB ones (nor THB the USD
cap), across a flush of the limit keys, and a USD withdrawal through IPPS (baht only) is REJECTED
UNSUPPORTED_CURRENCY with nothing held; balances exact in both currencies, the ledger and reconcile clean."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from pm.config.constants import LIMIT_KEY_PREFIX, RULES_POLL_INTERVAL_S
from pm.redis.wire import redis_from_url
from tests.support.fleet import running_fleet

CAP_INTENTS = 20
CURRENCY_TEST_TAG = "e2e-currencies"
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
            body={"currency": "THB", "operation_type": "P2P_TRANSFER", "tag": None, "period": "daily",
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

    redis = redis_from_url(fleet.redis_url)
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


async def test_p2p_in_thb_and_usd_each_against_its_own_cap_and_no_usd_payout(fleet) -> None:
    carol, dave = random.randrange(10**12, 10**14), random.randrange(10**14, 10**15)
    await fleet.fund(carol, 50_000, "USD")
    await fleet.fund(carol, 50_000, "THB")
    usd_cap, thb_cap = 3_000, 20_000
    # Rules of this test's own (a tag only its intents carry), whichever of the module's tests runs first:
    # pytest-xdist keeps a group on one worker, not the order of its tests.
    rule, thb_rule = [
        (
            await fleet.admin.request(
                "POST", "/admin/limit-rules",
                body={"currency": currency, "operation_type": "P2P_TRANSFER", "tag": CURRENCY_TEST_TAG,
                      "period": "daily", "max_amount_minor": cap, "max_count": None},
            )
        ).body
        for currency, cap in (("USD", usd_cap), ("THB", thb_cap))
    ]  # fmt: skip
    assert (rule["currency"], thb_rule["currency"]) == ("USD", "THB")
    await asyncio.sleep(RULES_POLL_INTERVAL_S + 0.5)  # every limits process has read them

    async def pay(amount_minor: int, currency: str) -> dict:
        return await fleet.app.create_intent(
            operation_type="P2P_TRANSFER", amount_minor=amount_minor, currency=currency, user_id=carol,
            recipient_id=dave, tags=[CURRENCY_TEST_TAG], wait_s=10,
        )  # fmt: skip

    redis = redis_from_url(fleet.redis_url)
    try:
        # 15,000 satang first: if THB counted against the USD cap, no dollar would pass it.
        assert (await pay(15_000, "THB"))["state"] == "SETTLED"
        assert [(await pay(amount, "USD"))["state"] for amount in (2_000, 1_000)] == ["SETTLED", "SETTLED"]
        # 3,000 cents taken: if USD counted against the THB rule, 15,000 + 3,000 + 5,000 would pass 20,000.
        assert (await pay(5_000, "THB"))["state"] == "SETTLED"
        await flush_limit_keys(redis)  # the counters are rebuilt from PostgreSQL, per currency
        over_usd, over_thb = await pay(1, "USD"), await pay(1, "THB")
    finally:
        await redis.aclose()
    assert over_usd["state"] == "REJECTED" and over_usd["error"]["code"] == "LIMIT_EXCEEDED", over_usd
    assert f"daily USD limit (rule {rule['id']} v1" in over_usd["error"]["message"]
    assert "0 of 3000 minor units remain" in over_usd["error"]["message"]
    assert over_thb["state"] == "REJECTED" and over_thb["error"]["code"] == "LIMIT_EXCEEDED", over_thb
    assert "daily THB limit" in over_thb["error"]["message"]

    payout = await fleet.app.create_intent(
        operation_type="IPPS_WITHDRAWAL", amount_minor=500, currency="USD", user_id=carol,
        destination_ref="tok_e2e_usd", wait_s=10,
    )  # fmt: skip
    assert (payout["state"], payout["error"]["code"]) == ("REJECTED", "UNSUPPORTED_CURRENCY")
    assert payout["channel"] is None  # refused at validation: never routed, never held
    await fleet.wait_finished([over_usd["id"], over_thb["id"], payout["id"]])

    assert await fleet.balance(carol, "USD") == (50_000 - usd_cap, 0)
    assert await fleet.balance(dave, "USD") == (usd_cap, 0)
    assert await fleet.balance(carol, "THB") == (50_000 - 20_000, 0)
    assert await fleet.balance(dave, "THB") == (20_000, 0)
    assert (await fleet.check()).ok  # every ledger balanced, transit at 0 in each currency, nothing pending
    assert (await fleet.reconcile()).mismatches == []
    await fleet.admin.request("DELETE", f"/admin/limit-rules/{rule['id']}")
