"""Proves the limits stage in the running pipeline (real PostgreSQL, Valkey, postgres ledger): over a
cap is REJECTED LIMIT_EXCEEDED saying which limit and what remains, a redelivered entry counts once,
intents that end REJECTED or FAILED give their places back, the cap holds after the Redis counters are
deleted mid-test, and 50 concurrent intents against a cap that admits 10 settle exactly 10, whatever the
interleaving of three limits consumers; and a rule tightened below what its rebuilt counter already holds
refuses the next intent LIMIT_EXCEEDED in one pass of the stage (no entry left to be claimed)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator

import channels
from consumers.bootstrap import open_stage_context
from consumers.main import running_stages
from consumers.runtime import StageRunner
from pm.domain.intent import ErrorCode, Intent, OperationType, State
from pm.domain.limits import Period, counter_keys_match, released_key
from pm.redis import streams
from pm.store import intents
from pm.store.audit import Actor
from pm.store.limit_rules import LimitRuleFields, create_rule, update_rule
from tests.support.pipeline import Pipeline, isolated_topology, open_pipeline

P2P = OperationType.P2P_TRANSFER
ACTOR = Actor("test", None)
# Redis is shared by the session and rule ids restart in every fresh database: users of their own.
_users = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


def new_users(count: int) -> list[int]:
    return [next(_users) for _ in range(count)]


async def add_rule(
    pipeline: Pipeline, max_amount_minor: int, max_count: int | None = None, tag: str | None = None
) -> int:
    fields = LimitRuleFields(
        "P2P_TRANSFER", tag, Period.DAILY, max_amount_minor, max_count, enabled=True, currency="THB"
    )
    return (await create_rule(pipeline.context.pool, ACTOR, fields))["id"]


async def submit(
    pipeline: Pipeline, amount_minor: int, sender: int, recipient: int, tags: tuple[str, ...] = ()
) -> Intent:
    """As Pipeline.submit, with tags."""
    outcome = await intents.create_intent(
        pipeline.context.pool, api_key_id="test", idempotency_key=uuid.uuid4().hex, request_hash=b"t",
        operation_type=P2P, amount_minor=amount_minor, currency="THB", sender_id=sender, recipient_id=recipient,
        operator_id=None, tags=list(tags),
    )  # fmt: skip
    assert outcome.created is not None
    await pipeline.context.redis.xadd(pipeline.topology.first_stage.stream, streams.entry_fields(outcome.created))
    return outcome.created


async def wait_state(pipeline: Pipeline, intent: Intent, state: str) -> None:
    for _ in range(600):  # up to 30 s on a busy machine
        if await pipeline.context.pool.fetchval("SELECT state FROM pm.intent WHERE id = $1", intent.id) == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{intent.id} never reached {state}")


async def counter_keys(pipeline: Pipeline, user: int) -> list[bytes]:
    pattern = counter_keys_match(user)
    return [key async for key in pipeline.context.redis.scan_iter(match=pattern, count=1_000)]


async def held(pipeline: Pipeline, user: int) -> tuple[int, int]:
    """(amount, count) in the user's one counter."""
    [key] = await counter_keys(pipeline, user)
    amount, count = await pipeline.context.redis.hmget(key, "_amount", "_count")
    return int(amount), int(count)


async def test_over_the_cap_is_rejected_saying_which_limit_and_what_remains(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        rule_id = await add_rule(pipeline, 5_000, tag="kyc_verified")
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 20_000)).id])
            first = await submit(pipeline, 3_000, alice, bob, ("kyc_verified",))
            await pipeline.wait_finished([first.id])
            over = await submit(pipeline, 2_500, alice, bob, ("kyc_verified",))
            untagged = await submit(pipeline, 9_000, alice, bob)  # the rule counts tagged intents only
            finished = await pipeline.wait_finished([first.id, over.id, untagged.id])
        assert await pipeline.balance(alice) == (20_000 - 12_000, 0)
    assert finished[first.id].state == State.SETTLED and finished[untagged.id].state == State.SETTLED
    refused = finished[over.id]
    assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.LIMIT_EXCEEDED)
    assert refused.error_message is not None
    assert f"daily THB limit (rule {rule_id} v1: P2P_TRANSFER, tag kyc_verified)" in refused.error_message
    assert "2000 of 5000 minor units remain" in refused.error_message


async def test_a_redelivered_limits_entry_counts_once(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    topology = isolated_topology()
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        await add_rule(pipeline, 10_000)
        payment = await submit(pipeline, 4_000, alice, bob)
        async with pipeline.stages(["validation", "fees"]):
            await wait_state(pipeline, payment, "PRICED")
        priced = await intents.load_intent(pipeline.context.pool, payment.id)
        assert priced is not None and priced.state == State.PRICED
        fields = {key.encode(): value for key, value in streams.entry_fields(priced).items()}
        runner = StageRunner(topology.stage("limits"), pipeline.context)
        first = await runner.process([(b"1-1", fields)])
        # The same entry again (a lost acknowledgement), and the handler alone on it once more.
        second = await runner.process([(b"1-2", fields)], redelivered=True)
        again = await runner.handler([priced], pipeline.context)
        assert (first.applied, second.applied, second.stale) == (1, 0, 1)
        assert again[0].new == State.CLEARED
        assert await held(pipeline, alice) == (4_000, 1)


async def test_an_intent_refused_after_its_reservation_gives_its_place_back(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        await add_rule(pipeline, 10_000)
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 3_000)).id])
            # Admitted by limits (6,000 <= 10,000), then refused by dispatch: alice has only 3,000.
            too_much = await submit(pipeline, 6_000, alice, bob)
            refused = (await pipeline.wait_finished([too_much.id]))[too_much.id]
            assert refused.error_code == ErrorCode.INSUFFICIENT_FUNDS
            assert await held(pipeline, alice) == (0, 0)
            # The whole cap is there again.
            await pipeline.wait_finished([(await pipeline.fund(alice, 20_000)).id])
            full = await submit(pipeline, 10_000, alice, bob)
            assert (await pipeline.wait_finished([full.id]))[full.id].state == State.SETTLED
        assert await held(pipeline, alice) == (10_000, 1)


async def test_an_intent_that_fails_gives_its_place_back(fresh_database, redis_url, monkeypatch) -> None:
    alice, bob = new_users(2)
    monkeypatch.setattr(type(channels.REGISTRY["INTERNAL_P2P"]), "hold_timeout_s", 1)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        await add_rule(pipeline, 10_000)
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 5_000)).id])
        payment = await submit(pipeline, 4_000, alice, bob)
        async with pipeline.stages(["validation", "fees", "limits", "dispatch"]):
            await wait_state(pipeline, payment, "AUTHORIZED")
        assert await held(pipeline, alice) == (4_000, 1)
        await asyncio.sleep(1.5)  # the hold expires before settlement runs: the intent FAILS
        async with pipeline.stages(["settlement", "history"]):
            failed = (await pipeline.wait_finished([payment.id]))[payment.id]
        assert (failed.state, failed.error_code) == (State.FAILED, ErrorCode.EXPIRED)
        assert await held(pipeline, alice) == (0, 0)


async def test_the_cap_holds_after_the_counters_are_deleted_mid_test(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology(batch_size=4)) as pipeline:
        await add_rule(pipeline, 10_000, max_count=8)
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 100_000)).id])
            before = [await submit(pipeline, 1_000, alice, bob) for _ in range(5)]
            await pipeline.wait_finished([p.id for p in before])
            keys = await counter_keys(pipeline, alice)
            assert len(keys) == 1
            await pipeline.context.redis.delete(*keys)  # Redis lost them: PostgreSQL still knows
            after = await asyncio.gather(*(submit(pipeline, 1_000, alice, bob) for _ in range(20)))
            finished = await pipeline.wait_finished([p.id for p in after])
        states = [finished[p.id].state for p in after]
        # The count cap (8) binds before the amount cap (10 x 1,000): 3 more after the 5.
        assert states.count(State.SETTLED) == 3 and states.count(State.REJECTED) == 17
        assert await held(pipeline, alice) == (8_000, 8)
        assert await pipeline.balance(bob) == (8_000, 0)


async def test_a_rule_tightened_below_its_rebuilt_count_refuses_at_once(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    topology = isolated_topology()
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        pool = pipeline.context.pool
        rule_id = await add_rule(pipeline, 10_000, max_count=5)
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 20_000)).id])
            before = [await submit(pipeline, 1_000, alice, bob) for _ in range(3)]
            await pipeline.wait_finished([p.id for p in before])
        # Tightened: version 2 starts a counter of its own, which the next intent rebuilds from PostgreSQL
        # with the three intents already settled, one more than the new count cap.
        tightened = LimitRuleFields("P2P_TRANSFER", None, Period.DAILY, 10_000, 2, enabled=True, currency="THB")
        assert (await update_rule(pool, ACTOR, rule_id, tightened))["version"] == 2
        pipeline.context.rules.expire()  # this process made the change: it counts at once
        late = await submit(pipeline, 1_000, alice, bob)
        async with pipeline.stages(["validation", "fees"]):
            await wait_state(pipeline, late, "PRICED")
        priced = await intents.load_intent(pool, late.id)
        assert priced is not None
        fields = {key.encode(): value for key, value in streams.entry_fields(priced).items()}
        limits = topology.stage("limits")
        # One pass of the stage decides it: no handler failure left pending for a claim in claim_idle_ms.
        outcome = await StageRunner(limits, pipeline.context).process([(b"1-1", fields)])
        assert (outcome.applied, outcome.failed) == (1, 0)
        refused = await intents.load_intent(pool, late.id)
        assert refused is not None
        assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.LIMIT_EXCEEDED)
        assert refused.error_message is not None
        assert f"rule {rule_id} v2" in refused.error_message
        assert "0 of 10000 minor units and 0 of 2 intents remain" in refused.error_message
        async with pipeline.stages():  # the outbox delivers the final state and gives the places back
            await pipeline.wait_finished([late.id])
        # Nothing reserved for the refused intent: the counter holds the three settled ones, and the
        # refused intent is marked released so a late redelivery cannot take a place.
        [v2_key] = [key for key in await counter_keys(pipeline, alice) if f":{rule_id}:2:".encode() in key]
        assert await pipeline.context.redis.hgetall(v2_key) == {
            b"_amount": b"3000",
            b"_count": b"3",
            **{str(p.id).encode(): b"1000" for p in before},
        }
        assert await pipeline.context.redis.exists(released_key(refused)) == 1
        assert (await pipeline.context.redis.xpending(limits.stream, limits.group))["pending"] == 0
        assert await pipeline.balance(alice) == (17_000, 0)
        assert await pipeline.balance(bob) == (3_000, 0)
        assert (await pipeline.check()).ok


@contextlib.asynccontextmanager
async def extra_consumers(pipeline: Pipeline, stage: str, count: int) -> AsyncIterator[None]:
    """`count` more consumers of a stage, each with connections of its own."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(count):
            context = await stack.enter_async_context(
                open_stage_context(pipeline.database_url, pipeline.redis_url, pipeline.database_url, pipeline.topology)
            )
            await stack.enter_async_context(running_stages(context, pipeline.redis_url, [stage], False))
        yield


async def test_fifty_concurrent_intents_against_a_cap_that_admits_ten_settle_exactly_ten(
    fresh_database, redis_url
) -> None:
    alice, bob = new_users(2)
    # Small batches, so three limits consumers share the fifty and interleave.
    async with open_pipeline(fresh_database, redis_url, isolated_topology(batch_size=3)) as pipeline:
        await add_rule(pipeline, 10_000)
        async with pipeline.stages(), extra_consumers(pipeline, "limits", 2):
            await pipeline.wait_finished([(await pipeline.fund(alice, 100_000)).id])
            payments = await asyncio.gather(*(submit(pipeline, 1_000, alice, bob) for _ in range(50)))
            finished = await pipeline.wait_finished([p.id for p in payments], timeout_s=120)
        states = [finished[p.id].state for p in payments]
        assert states.count(State.SETTLED) == 10
        assert {finished[p.id].error_code for p in payments if finished[p.id].state != State.SETTLED} == {
            ErrorCode.LIMIT_EXCEEDED
        }
        assert await pipeline.balance(alice) == (90_000, 0)
        assert await pipeline.balance(bob) == (10_000, 0)
        assert await held(pipeline, alice) == (10_000, 10)
        assert (await pipeline.check()).ok
