"""A fee the user was quoted binds what is charged, through the real gateway on a running pipeline (real
PostgreSQL, Valkey and the postgres ledger): POST /quote, then an admin raises the fee rule, then POST
/intents with the quoted fees as `max_fee_pre_minor` / `max_fee_post_minor` ends REJECTED FEE_CHANGED with
nothing held (balances unchanged, transit 0, debits = credits); with bounds at or above the fees it
settles with the right balances; POST /quote answers 422 FEE_CHANGED the same way; bad bounds are 422
VALIDATION_FAILED with nothing written; a replay of an Idempotency-Key with another bound is 422
IDEMPOTENCY_KEY_REUSED."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

from pm.config.constants import RULES_POLL_INTERVAL_S
from pm.config.settings import Settings
from pm.domain.intent import ErrorCode, State
from pm.domain.pricing import FeeKind
from pm.store import fee_rules
from pm.store.audit import Actor
from pm.store.fee_rules import FeeRuleFields
from tests.support.gateway_pipeline import GatewayPipeline, error_of, gateway_on_pipeline

ACTOR = Actor(api_key_id="test", operator_id=None)
APP_SCOPES = "intents:write,intents:read,balance:read"
_ids = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


def new_ids(count: int) -> list[int]:
    return [next(_ids) for _ in range(count)]


def rule(amount: str, kind: FeeKind) -> FeeRuleFields:
    return FeeRuleFields(
        name=f"{kind} bound test", operation_type="P2P_TRANSFER", channel="INTERNAL_P2P", condition="true",
        amount=amount, kind=kind, priority=10, currency="THB",
    )  # fmt: skip


def p2p(recipient_id: int, amount_minor: int, **bounds: Any) -> dict[str, Any]:
    return {"operation_type": "P2P_TRANSFER", "amount_minor": amount_minor, "currency": "THB",
            "recipient_id": recipient_id, **bounds}  # fmt: skip


async def assert_clean(world: GatewayPipeline) -> None:
    report = await world.pipeline.check()
    assert report.ok, report.problems
    assert all(t.posted_net == 0 and t.pending_net == 0 for t in report.transit)
    assert all(t.debits_posted == t.credits_posted for t in report.ledgers.values())


async def finished(world: GatewayPipeline, response) -> Any:
    assert response.status == 202, await response.text()
    intent_id = uuid.UUID((await response.json())["id"])
    return (await world.pipeline.wait_finished([intent_id]))[intent_id]


async def test_a_fee_raised_after_the_quote_rejects_the_intent_and_one_within_the_bound_settles(
    fresh_database, redis_url
) -> None:
    alice, bob = new_ids(2)
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pool = world.pipeline.context.pool
        key = await world.key(APP_SCOPES, "P2P_TRANSFER")
        pre = await fee_rules.create_rule(pool, ACTOR, rule("amount / 100", FeeKind.PRE))
        post = await fee_rules.create_rule(pool, ACTOR, rule("20", FeeKind.POST))
        await world.pipeline.fund(alice, 100_000)
        body = json.dumps(p2p(bob, 10_000)).encode()
        quoted = await world.send("POST", "/quote", key=key, body=body, user_id=alice)
        assert quoted.status == 200, await quoted.text()
        quote = await quoted.json()
        assert (quote["fee_pre_minor"], quote["fee_post_minor"]) == (100, 20)
        bounds = {"max_fee_pre_minor": quote["fee_pre_minor"], "max_fee_post_minor": quote["fee_post_minor"]}

        # The admin raises the PRE fee to 2 % between the quote and the intent.
        await fee_rules.update_rule(pool, ACTOR, pre.rule.id, rule("amount / 50", FeeKind.PRE))
        await asyncio.sleep(2 * RULES_POLL_INTERVAL_S)  # every process reloads within this
        before = (await world.pipeline.balance(alice), await world.pipeline.balance(bob))

        requoted = await world.send("POST", "/quote", key=key, body=json.dumps(p2p(bob, 10_000, **bounds)).encode(),
                                    user_id=alice)  # fmt: skip
        assert await error_of(requoted) == (422, ErrorCode.FEE_CHANGED)

        refused = await finished(world, await world.post_intent(key, p2p(bob, 10_000, **bounds), user_id=alice))
        assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.FEE_CHANGED)
        assert "200" in refused.error_message and "max_fee_pre_minor 100" in refused.error_message
        assert (refused.max_fee_pre_minor, refused.max_fee_post_minor) == (100, 20)
        assert (await world.pipeline.balance(alice), await world.pipeline.balance(bob)) == before
        await assert_clean(world)

        # A POST fee raised above its bound refuses likewise, the PRE fee within its own.
        await fee_rules.update_rule(pool, ACTOR, post.rule.id, rule("21", FeeKind.POST))
        await asyncio.sleep(2 * RULES_POLL_INTERVAL_S)
        bounds_post = {"max_fee_pre_minor": 200, "max_fee_post_minor": 20}
        refused = await finished(world, await world.post_intent(key, p2p(bob, 10_000, **bounds_post), user_id=alice))
        assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.FEE_CHANGED)
        assert (await world.pipeline.balance(alice), await world.pipeline.balance(bob)) == before

        # At the bound (PRE) and above the fee (POST): it goes through, with the fees priced.
        bounds_ok = {"max_fee_pre_minor": 200, "max_fee_post_minor": 500}
        response = await world.post_intent(key, p2p(bob, 10_000, **bounds_ok), user_id=alice)
        assert (await response.json())["max_fee_pre_minor"] == 200
        settled = await finished(world, response)
        assert settled.state == State.SETTLED, settled
        assert (settled.fee_pre_minor, settled.fee_post_minor) == (200, 21)
        assert await world.pipeline.balance(alice) == (before[0][0] - 10_000 - 200, 0)
        assert await world.pipeline.balance(bob) == (before[1][0] + 10_000 - 21, 0)
        await assert_clean(world)


async def test_bad_bounds_are_refused_and_nothing_is_written(fresh_database, redis_url) -> None:
    alice, bob = new_ids(2)
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        key = await world.key(APP_SCOPES, "P2P_TRANSFER")
        too_large = Settings().intent_amount_minor_max + 1  # the gateway's setting, as the amount's bound
        for name in ("max_fee_pre_minor", "max_fee_post_minor"):
            for value in (-1, "5", 1.5, True, [], too_large, 2**63):
                body = p2p(bob, 10_000, **{name: value})
                assert await error_of(await world.post_intent(key, body, user_id=alice)) == (
                    422, ErrorCode.VALIDATION_FAILED), (name, value)  # fmt: skip
                quoted = await world.send("POST", "/quote", key=key, body=json.dumps(body).encode(), user_id=alice)
                assert await error_of(quoted) == (422, ErrorCode.VALIDATION_FAILED), (name, value)
        assert await world.writes_by(key) == (0, 0)
        # 0 and null are bounds: 0 means "no fee", null none at all.
        for value in (0, None):
            response = await world.post_intent(key, p2p(bob, 10_000, max_fee_pre_minor=value), user_id=alice)
            assert response.status == 202, await response.text()


async def test_a_replay_with_another_bound_is_another_request(fresh_database, redis_url) -> None:
    alice, bob = new_ids(2)
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        key = await world.key(APP_SCOPES, "P2P_TRANSFER")
        idempotency_key = uuid.uuid4().hex
        first = await world.post_intent(key, p2p(bob, 10_000, max_fee_pre_minor=100), user_id=alice,
                                        idempotency_key=idempotency_key)  # fmt: skip
        assert first.status == 202, await first.text()
        answer = await first.json()
        assert (answer["max_fee_pre_minor"], answer["max_fee_post_minor"]) == (100, None)
        again = await world.post_intent(key, p2p(bob, 10_000, max_fee_pre_minor=100), user_id=alice,
                                        idempotency_key=idempotency_key)  # fmt: skip
        assert again.status == 202 and await again.json() == answer  # rebuilt from the row, bound included
        for other in ({"max_fee_pre_minor": 101}, {"max_fee_post_minor": 0}, {}):
            replay = await world.post_intent(key, p2p(bob, 10_000, **other), user_id=alice,
                                             idempotency_key=idempotency_key)  # fmt: skip
            assert await error_of(replay) == (422, ErrorCode.IDEMPOTENCY_KEY_REUSED), other
        assert await world.writes_by(key) == (1, 1)
