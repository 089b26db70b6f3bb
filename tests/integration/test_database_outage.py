"""Proves that PostgreSQL dropping every PM connection costs retries and nothing else (issue 12, item 2): while
1,000 P2P intents go through the real gateway and stages, every backend of the database is terminated
(`pg_terminate_backend`) three times; the gateway answers 503 UNAVAILABLE with Retry-After (or 409 while a
first commit's answer was lost), never 500 and never a 2xx for an intent it did not commit; the pools
recover within 10 s; every intent settles exactly once with exact balances, nothing pending, no dead letter
and a clean ledger. With `max_deliveries: 1`, a batch whose delivery counted would be dead-lettered at its
first retry: the stages must not count a delivery that failed because the database was down. (A long
`claim_idle_ms`, so that a batch slow under this load is not taken for an orphan: a forgiven batch is
claimed again about a second after its failure whatever claim_idle_ms is.)"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid

import asyncpg

from pm.domain.intent import State
from tests.support.gateway_pipeline import GatewayPipeline, gateway_on_pipeline
from tests.support.outage import (
    assert_balances_after,
    assert_converged,
    funded_plan,
    outages_counted,
    post_until_accepted,
    terminate_every_backend,
)
from tests.support.pipeline import isolated_topology

INTENTS = 1_000
CALLERS = 32  # concurrent requests
USERS = 20  # senders; as many recipients
FUNDS_MINOR = 10_000_000
TERMINATE_AFTER_ACCEPTED = (100, 400, 700)
RECOVERY_S_MAX = 10.0
AUTH_CENTER_SCOPES = "intents:write,intents:read,balance:read"


async def _terminate_rounds(admin: asyncpg.Connection, accepted: list[uuid.UUID], done: asyncio.Event) -> list[int]:
    """Terminate every other backend of the database each time `accepted` reaches a threshold."""
    terminated = []
    for threshold in TERMINATE_AFTER_ACCEPTED:
        for _ in range(6_000):  # at most a minute
            if len(accepted) >= threshold or done.is_set():
                break
            await asyncio.sleep(0.01)
        terminated.append(await terminate_every_backend(admin))
    return terminated


async def _ready_within(world: GatewayPipeline, seconds: float) -> float:
    started_s = time.monotonic()
    while (await world.client.get("/readyz")).status != 200:
        assert time.monotonic() - started_s < seconds, "the gateway's pools did not recover in time"
        await asyncio.sleep(0.1)
    return time.monotonic() - started_s


async def test_terminated_connections_cost_retries_and_nothing_else(fresh_database, redis_url) -> None:
    topology = isolated_topology(claim_idle_ms=10_000, max_deliveries=1)
    async with gateway_on_pipeline(fresh_database, redis_url, topology) as world:
        pipeline = world.pipeline
        senders, recipients, plan = await funded_plan(pipeline, USERS, INTENTS, FUNDS_MINOR)
        key = await world.key(AUTH_CENTER_SCOPES, "P2P_TRANSFER")
        outages_before = outages_counted("database")

        admin = await asyncpg.connect(pipeline.database_url, timeout=10)
        answers: collections.Counter[tuple[int, str]] = collections.Counter()
        accepted: list[uuid.UUID] = []
        queue = iter(plan)
        deadline_s = time.monotonic() + 60

        async def caller() -> None:
            for sender, recipient, amount in queue:
                body = {"operation_type": "P2P_TRANSFER", "amount_minor": amount, "currency": "THB",
                        "recipient_id": recipient}  # fmt: skip
                accepted.append(await post_until_accepted(world, key, body, sender, answers, deadline_s))

        done = asyncio.Event()
        try:
            terminator = asyncio.create_task(_terminate_rounds(admin, accepted, done))
            await asyncio.gather(*(caller() for _ in range(CALLERS)))
            done.set()
            terminated = await terminator
        finally:
            await admin.close(timeout=10)
        assert all(count > 0 for count in terminated), terminated
        await _ready_within(world, RECOVERY_S_MAX)

        finished = await pipeline.wait_finished(accepted, timeout_s=60)
        # Every 2xx named an intent that exists; no retry made a second one.
        assert len(set(accepted)) == INTENTS and await world.writes_by(key) == (INTENTS, INTENTS)
        assert {intent.state for intent in finished.values()} == {State.SETTLED}
        await assert_balances_after(pipeline.balance, plan, senders, recipients, FUNDS_MINOR)
        await assert_converged(world, accepted)
        # The outage was real: stages met it (and uncounted it), callers were told to retry.
        assert outages_counted("database") > outages_before, answers
        assert set(answers) <= {(202, ""), (503, "UNAVAILABLE"), (409, "REQUEST_IN_FLIGHT")}, answers
