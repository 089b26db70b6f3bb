"""Redis losing its data, and a consumer stopping, on real servers: the status poller notices the lost
data marker and re-drives every unfinished intent at once (whatever stuck_after_s) and announces the
review events again; a stage whose group vanished under it subscribes again and reads what comes next;
a stopping consumer hands back its pending entries, so another claims them at once, delivery count kept
(also through the whole stop of `running_stages`); a batch whose group vanished meanwhile still commits."""

from __future__ import annotations

import asyncio
import time

from consumers import outbox
from consumers.main import running_stages
from consumers.poller import notice_data_loss, recover_once
from consumers.runtime import StageRunner
from pm.domain.intent import OperationType, State
from pm.domain.webhook_policy import AllowedHosts
from pm.redis import streams
from pm.store import reviews
from tests.support.pipeline import isolated_topology, open_pipeline

CLAIM_IDLE_MS = 60_000


async def _deliver_outbox(pipeline) -> None:
    webhooks = outbox.webhook_client(AllowedHosts())
    try:
        receivers = outbox.Receivers(webhooks, pipeline.context.redis, pipeline.topology)
        await outbox.deliver_once(pipeline.context.pool, receivers)
    finally:
        await webhooks.close()


async def test_lost_marker_redrives_unfinished_intents_and_reannounces_reviews(fresh_database, redis_url) -> None:
    topology = isolated_topology(stuck_after_s=300)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        context, redis = pipeline.context, pipeline.context.redis
        assert await notice_data_loss(context) is not None  # a new Redis: no marker yet
        assert await notice_data_loss(context) is None  # the marker is there now
        created = [await pipeline.submit(OperationType.P2P_TRANSFER, 500, 1, 2, publish=False) for _ in range(3)]
        await reviews.flag(context.pool, [created[0].id], "paid at the PSP after it failed here")
        await _deliver_outbox(pipeline)
        (announced,) = await redis.xrange(topology.review_stream)

        # Redis loses everything this topology held.
        stage_streams = [stage.stream for stage in topology.stages.values()]
        await redis.delete(topology.data_marker, topology.review_stream, *stage_streams)
        recovery = await notice_data_loss(context)
        assert recovery is not None
        assert await recover_once(context, recovery)  # done in one round: three intents
        entries = await redis.xrange(topology.first_stage.stream)
        assert sorted(str(streams.decode_entry(fields).id) for _, fields in entries) == sorted(
            str(intent.id) for intent in created
        )
        assert await redis.xlen(topology.review_stream) == 0  # announced again by the outbox worker:
        await _deliver_outbox(pipeline)
        (again,) = await redis.xrange(topology.review_stream)
        assert again[1][b"event_id"] == announced[1][b"event_id"]


async def test_stage_subscribes_again_after_its_group_vanished(fresh_database, redis_url) -> None:
    topology = isolated_topology()
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        funded = await pipeline.fund(11, 10_000)
        async with pipeline.stages(["validation"]):
            await _wait_state(pipeline, funded.id, State.VALIDATED)
            await pipeline.context.redis.delete(topology.first_stage.stream)  # the group goes with it
            await asyncio.sleep(0.5)  # the subscriber's next read meets NOGROUP
            intent = await pipeline.submit(OperationType.P2P_TRANSFER, 500, 11, 12)
            await _wait_state(pipeline, intent.id, State.VALIDATED)


async def test_hand_back_lets_another_consumer_claim_at_once(fresh_database, redis_url) -> None:
    topology = isolated_topology(claim_idle_ms=CLAIM_IDLE_MS)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        stage, redis = topology.first_stage, pipeline.context.redis
        created = [await pipeline.submit(OperationType.P2P_TRANSFER, 500, 21, 22) for _ in range(3)]
        stopping = StageRunner(stage, pipeline.context)
        stopping.consumer += "-stopping"
        read = await redis.xreadgroup(stage.group, stopping.consumer, {stage.stream: ">"}, count=10)
        assert len(read[0][1]) == 3  # read, never handled: the subscriber stopped right after the read

        assert await stopping.hand_back() == 3
        pending = await redis.xpending_range(stage.stream, stage.group, "-", "+", 10)
        assert all(row["time_since_delivered"] >= CLAIM_IDLE_MS for row in pending), pending
        assert all(row["times_delivered"] == 1 for row in pending), pending
        live = StageRunner(stage, pipeline.context)
        assert await live.claim_once() == 3
        for intent in created:
            await _wait_state(pipeline, intent.id, State.VALIDATED)
        assert (await redis.xpending(stage.stream, stage.group))["pending"] == 0


async def _wait_state(pipeline, intent_id, state: State, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (
        now := await pipeline.context.pool.fetchval("SELECT state FROM pm.intent WHERE id = $1", intent_id)
    ) != state:
        assert time.monotonic() < deadline, f"{intent_id} is {now}, not {state}, after {timeout_s} s"
        await asyncio.sleep(0.05)


async def test_batch_whose_group_vanished_meanwhile_commits_and_goes_on(fresh_database, redis_url) -> None:
    topology = isolated_topology()
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        stage, redis = topology.first_stage, pipeline.context.redis
        created = [await pipeline.submit(OperationType.P2P_TRANSFER, 500, 31, 32) for _ in range(3)]
        runner = StageRunner(stage, pipeline.context)
        ((_, entries),) = await redis.xreadgroup(stage.group, runner.consumer, {stage.stream: ">"}, count=10)
        await redis.delete(stage.stream)  # Redis lost its data while the batch was in flight

        outcome = await runner.process(entries)  # its acknowledgement finds no group: harmless
        assert outcome.applied == 3
        next_stage = topology.stage_for_state(State.VALIDATED)
        published = await redis.xrange(next_stage.stream)
        assert {streams.decode_entry(fields).id for _, fields in published} == {intent.id for intent in created}


async def test_stopping_stages_hand_back_what_they_read_and_did_not_handle(fresh_database, redis_url) -> None:
    topology = isolated_topology(claim_idle_ms=CLAIM_IDLE_MS)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        stage, redis, context = topology.first_stage, pipeline.context.redis, pipeline.context
        created = [await pipeline.submit(OperationType.P2P_TRANSFER, 500, 41, 42, publish=False) for _ in range(3)]
        started_s = time.monotonic()
        async with running_stages(context, redis_url, [stage.name], with_poller=False) as (runner,):
            # A read that returned just as the subscriber stopped: entries on this consumer, never handled.
            # One transaction, so the subscriber's own blocked read cannot take them first.
            async with redis.pipeline(transaction=True) as multi:
                for intent in created:
                    multi.xadd(stage.stream, streams.entry_fields(intent))
                multi.xreadgroup(stage.group, runner.consumer, {stage.stream: ">"}, count=10)
                *_, read = await multi.execute()
            assert len(read[0][1]) == 3
        assert time.monotonic() - started_s < context.shutdown_grace_s
        pending = await redis.xpending_range(stage.stream, stage.group, "-", "+", 10)
        assert [row["consumer"] for row in pending] == [runner.consumer.encode()] * 3
        assert all(row["time_since_delivered"] >= CLAIM_IDLE_MS for row in pending), pending
        assert all(row["times_delivered"] == 1 for row in pending), pending
