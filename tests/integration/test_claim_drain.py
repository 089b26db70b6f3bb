"""Proves that a stage's claim loop drains a large backlog of orphaned entries (issue 12: everything an
outage left pending) at its own pace: one look claims round after round while they come back full,
instead of one batch per half claim-idle period; and that every claimed entry is handled and acknowledged."""

from __future__ import annotations

import asyncio
import time

from consumers.runtime import StageRunner
from pm.domain.intent import OperationType, State
from pm.redis import streams
from tests.support.pipeline import isolated_topology, open_pipeline

ENTRIES = 700  # almost three rounds of the batch below
BATCH_SIZE = 256
CLAIM_IDLE_MS = 2_000  # a look every second


async def test_one_look_claims_every_orphaned_entry(fresh_database, redis_url) -> None:
    topology = isolated_topology(claim_idle_ms=CLAIM_IDLE_MS, batch_size=BATCH_SIZE)
    validation = topology.stage("validation")
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        redis = pipeline.context.redis
        intents = [await pipeline.submit(OperationType.P2P_TRANSFER, 100, 1, 2) for _ in range(ENTRIES)]
        # A consumer that read them all and died.
        read = await redis.xreadgroup(validation.group, "dead-consumer", {validation.stream: ">"}, count=ENTRIES)
        assert sum(len(entries) for _, entries in read) == ENTRIES
        await asyncio.sleep(CLAIM_IDLE_MS / 1000)

        seen: list[int] = []

        async def handler(batch, context):
            seen.append(len(batch))
            return []  # nothing to do: each entry is acknowledged

        runner = StageRunner(validation, pipeline.context, handler)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.claim_forever(stop))
        started_s = time.monotonic()
        try:
            # The first look comes after CLAIM_IDLE_MS / 2; the next one a second later.
            while (await streams.backlog(redis, validation.stream, validation.group)).pending:
                assert time.monotonic() - started_s < 1.9 * CLAIM_IDLE_MS / 2000 + 0.5, seen
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        assert sum(seen) == ENTRIES and max(seen) == BATCH_SIZE, seen
        states = await pipeline.context.pool.fetch(
            "SELECT DISTINCT state FROM pm.intent WHERE id = ANY($1::uuid[])", [i.id for i in intents]
        )
        assert [row["state"] for row in states] == [str(State.CREATED)]  # the handler moved nothing
