"""The history stage on real PostgreSQL and Valkey, with every other stage and the outbox worker in-process:
final intents reach it only through its stream (fed by the outbox worker), and it writes each user's
history row once, gives back a refused intent's limit place and sets `finished`. An entry left pending by a
dead consumer is claimed and handled; one that keeps failing is dead-lettered (the intent flagged, not
finished, not re-driven by the poller) until `pm dlq replay history` ends it, and a second replay is
refused. A final intent whose entry was lost is re-driven to it by the status poller, after `stuck_after_s`
and, when Redis lost its data, at once. Every test ends with exact balances and a clean ledger."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid

import pytest

from consumers.poller import Recovery, recover_once, redrive_once
from consumers.runtime import StageRunner
from pm.cli import dead_letters
from pm.domain import history
from pm.domain.intent import ErrorCode, Intent, OperationType, State
from pm.domain.limits import Period, counter_keys_match
from pm.redis import streams
from pm.store import intents
from pm.store.audit import Actor
from pm.store.limit_rules import LimitRuleFields, create_rule
from tests.support.pipeline import Pipeline, isolated_topology, open_pipeline

OPEN_STAGES = ["validation", "fees", "limits", "dispatch", "settlement"]  # every stage but history
# Redis is shared by the session and rule ids restart in every fresh database: users of their own.
_users = itertools.count(random.randrange(10**14, 10**15, 10**6))


async def held(pipeline: Pipeline, user: int) -> tuple[int, int]:
    """(amount, count) of the places the user holds in its limit counters."""
    pattern = counter_keys_match(user)
    keys = [key async for key in pipeline.context.redis.scan_iter(match=pattern, count=1_000)]
    places = [await pipeline.context.redis.hmget(key, "_amount", "_count") for key in keys]
    return sum(int(amount) for amount, _ in places), sum(int(count) for _, count in places)


async def ended_without_history(pipeline: Pipeline) -> tuple[int, int, Intent, Intent]:
    """Alice (3,000 THB minor units, a daily cap of 10,000) pays bob 1,000 and tries 6,000, which limits
    admits and dispatch refuses; every stage but history runs, so both end on the history stream, unfinished,
    the refused one still holding its place. Returns (alice, bob, paid, refused)."""
    alice, bob = next(_users), next(_users)
    rule = LimitRuleFields("P2P_TRANSFER", None, Period.DAILY, 10_000, None, enabled=True, currency="THB")
    await create_rule(pipeline.context.pool, Actor("test", None), rule)
    async with pipeline.stages():
        await pipeline.wait_finished([(await pipeline.fund(alice, 3_000)).id])
    final_stream = pipeline.topology.final_stage.stream
    added_before = int((await pipeline.context.redis.xinfo_stream(final_stream))["entries-added"])
    async with pipeline.stages(OPEN_STAGES):
        paid = await pipeline.submit(OperationType.P2P_TRANSFER, 1_000, alice, bob)
        refused = await pipeline.submit(OperationType.P2P_TRANSFER, 6_000, alice, bob)
        for _ in range(600):  # up to a minute on a busy machine
            added = int((await pipeline.context.redis.xinfo_stream(final_stream))["entries-added"])
            if added - added_before >= 2:
                break
            await asyncio.sleep(0.1)
    ended = {i.id: i for i in await intents.load_intents(pipeline.context.pool, [paid.id, refused.id])}
    assert ended[paid.id].state == State.SETTLED
    assert (ended[refused.id].state, ended[refused.id].error_code) == (State.REJECTED, ErrorCode.INSUFFICIENT_FUNDS)
    assert await finished(pipeline, [paid.id, refused.id]) == {paid.id: False, refused.id: False}
    assert await held(pipeline, alice) == (7_000, 2)  # the refused intent's place is not given back yet
    return alice, bob, ended[paid.id], ended[refused.id]


async def finished(pipeline: Pipeline, ids: list[uuid.UUID]) -> dict[uuid.UUID, bool]:
    rows = await pipeline.context.pool.fetch("SELECT id, finished FROM pm.intent WHERE id = ANY($1::uuid[])", ids)
    return {row["id"]: row["finished"] for row in rows}


async def assert_ended_once(pipeline: Pipeline, alice: int, bob: int, paid: Intent, refused: Intent) -> None:
    """History rows once each, finished, the refused place given back, balances exact, the ledger clean."""
    await pipeline.wait_finished([paid.id, refused.id])
    rows = await pipeline.context.pool.fetch(
        "SELECT intent_id, user_id, direction, amount_minor, state FROM pm.history WHERE intent_id = ANY($1::uuid[])",
        [paid.id, refused.id],
    )
    shown = [(r["intent_id"] == paid.id, r["user_id"], r["direction"], r["amount_minor"], r["state"]) for r in rows]
    assert sorted(shown) == sorted(
        [(True, alice, "DEBIT", 1_000, "SETTLED"), (True, bob, "CREDIT", 1_000, "SETTLED"),
         (False, alice, "DEBIT", 0, "REJECTED")]
    )  # fmt: skip
    assert await held(pipeline, alice) == (1_000, 1)
    assert await pipeline.balance(alice) == (2_000, 0)
    assert await pipeline.balance(bob) == (1_000, 0)
    report = await pipeline.check()
    assert report.ok, report.problems
    stage = pipeline.topology.final_stage
    assert (await pipeline.context.redis.xpending(stage.stream, stage.group))["pending"] == 0


async def test_an_entry_left_pending_by_a_dead_consumer_is_claimed_and_ends_the_intent(
    fresh_database, redis_url
) -> None:
    topology = isolated_topology(claim_idle_ms=500)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        alice, bob, paid, refused = await ended_without_history(pipeline)
        stage = topology.final_stage
        # A history consumer that read both entries and died.
        read = await pipeline.context.redis.xreadgroup(stage.group, "dead-consumer", {stage.stream: ">"}, count=100)
        assert sum(len(entries) for _, entries in read) == 2
        runner = StageRunner(stage, pipeline.context)
        assert await runner.claim_once() == 0  # not idle long enough yet
        await asyncio.sleep(0.6)
        assert await runner.claim_once() == 2
        await assert_ended_once(pipeline, alice, bob, paid, refused)
        assert await runner.claim_once() == 0


async def test_a_failing_entry_is_dead_lettered_until_an_operator_replays_it(
    fresh_database, redis_url, monkeypatch
) -> None:
    topology = isolated_topology(claim_idle_ms=300, max_deliveries=2, stuck_after_s=1)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        alice, bob, paid, refused = await ended_without_history(pipeline)
        stage, redis = topology.final_stage, pipeline.context.redis
        original = history.write_arguments

        def write_arguments(batch: list[Intent]):
            if any(intent.id == refused.id for intent in batch):
                raise RuntimeError("poisoned history entry for the test")
            return original(batch)

        monkeypatch.setattr(history, "write_arguments", write_arguments)
        async with pipeline.stages(["history"], with_outbox=False):
            for _ in range(600):
                if (
                    await redis.xlen(stage.dead_letter_stream)
                    and not (await redis.xpending(stage.stream, stage.group))["pending"]
                ):
                    break
                await asyncio.sleep(0.1)
        ((_, dead),) = await redis.xrange(stage.dead_letter_stream)
        assert b"poisoned history entry" in dead[b"error"]
        assert await finished(pipeline, [paid.id, refused.id]) == {paid.id: True, refused.id: False}
        flags = await pipeline.context.pool.fetchrow("SELECT needs_operator FROM pm.intent WHERE id = $1", refused.id)
        assert flags["needs_operator"]
        await asyncio.sleep(1.1)  # past stuck_after_s: the poller still leaves the flagged intent alone
        assert await redrive_once(pipeline.context) == 0
        assert await dead_letters.flagged_count(pipeline.context.pool) == 1

        monkeypatch.setattr(history, "write_arguments", original)  # the cause is gone
        report = await dead_letters.replay(pipeline.context.pool, redis, topology, stage, [str(refused.id)])
        assert [(intent.id, name) for intent, name in report.replayed] == [(refused.id, "history")]
        assert report.deleted_letters == 1
        async with pipeline.stages(["history"], with_outbox=False):
            await assert_ended_once(pipeline, alice, bob, paid, refused)
        with pytest.raises(dead_letters.DeadLetterError, match="finished: nothing to replay"):
            await dead_letters.replay(pipeline.context.pool, redis, topology, stage, [str(refused.id)])
        assert await dead_letters.flagged_count(pipeline.context.pool) == 0


async def test_the_poller_re_drives_a_final_intent_whose_entry_was_lost(fresh_database, redis_url) -> None:
    topology = isolated_topology(stuck_after_s=1)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        alice, bob, paid, refused = await ended_without_history(pipeline)
        stage = topology.final_stage
        await pipeline.context.redis.xtrim(stage.stream, maxlen=0)  # the entries are lost, the group stays
        await asyncio.sleep(1.1)
        assert await redrive_once(pipeline.context) == 2
        assert await pipeline.context.redis.xlen(stage.stream) == 2
        async with pipeline.stages(["history"], with_outbox=False):
            await assert_ended_once(pipeline, alice, bob, paid, refused)
        await asyncio.sleep(1.1)
        assert await redrive_once(pipeline.context) == 0  # finished: off the poller's work list


async def test_after_redis_lost_its_data_the_recovery_re_drives_final_intents_at_once(
    fresh_database, redis_url
) -> None:
    topology = isolated_topology()  # stuck_after_s 30: only the recovery re-drives them now
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        alice, bob, paid, refused = await ended_without_history(pipeline)
        stage = topology.final_stage
        await pipeline.context.redis.xtrim(stage.stream, maxlen=0)
        assert await redrive_once(pipeline.context) == 0
        since = await pipeline.context.pool.fetchval("SELECT clock_timestamp()")
        assert await recover_once(pipeline.context, Recovery(since)) is True
        entries = await pipeline.context.redis.xrange(stage.stream)
        assert sorted(str(streams.decode_entry(fields).id) for _, fields in entries) == sorted(
            [str(paid.id), str(refused.id)]
        )
        async with pipeline.stages(["history"], with_outbox=False):
            await assert_ended_once(pipeline, alice, bob, paid, refused)
