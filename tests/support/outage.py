"""Helpers of the outage tests (issue 12, items 2 and 3): callers that retry what the gateway could not
take, and the checks that a pipeline converged after an outage. No tests here."""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from prometheus_client import REGISTRY

from pm.redis import streams
from tests.support.gateway_pipeline import GatewayPipeline, Key
from tests.support.pipeline import FINISHED

# What a caller may be told while a dependency is down: 503 with Retry-After, or (its first request's
# commit answered nothing) 409 until the stored answer exists. Never 500, never a 2xx for nothing.
RETRYABLE = {(503, "UNAVAILABLE"), (409, "REQUEST_IN_FLIGHT")}
RETRY_PAUSE_S = 0.1
LOCK_WAIT_POLLS_MAX = 200  # 10 ms apart: at most about 2 s

_TERMINATE_SQL = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""
_WAITING_ON_LOCK_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
"""


async def terminate_every_backend(admin: asyncpg.Connection) -> int:
    """pg_terminate_backend every other client of the database while some are mid-transaction; how many.

    A connection idle in its pool when its backend goes is replaced unseen at the next acquire, so a
    termination at a random instant may miss every stage (seen in CI). Holding a SHARE lock on
    pm.intent_event, which every state change writes, first makes the writers queue inside their
    transactions; the termination then lands in the middle of their work."""
    async with admin.transaction():
        await admin.execute("LOCK TABLE pm.intent_event IN SHARE MODE")
        for _ in range(LOCK_WAIT_POLLS_MAX):
            if await admin.fetchval(_WAITING_ON_LOCK_SQL) > 0:
                break
            await asyncio.sleep(0.01)
        return await admin.fetchval(_TERMINATE_SQL)


async def post_until_accepted(
    world: GatewayPipeline,
    key: Key,
    body: dict[str, Any],
    user_id: int,
    answers: collections.Counter[tuple[int, str]],
    deadline_s: float,
) -> uuid.UUID:
    """POST the intent, retrying with the same Idempotency-Key while the answer says "retry"; its id."""
    idempotency_key = uuid.uuid4().hex
    while True:
        response = await world.post_intent(key, body, user_id=user_id, idempotency_key=idempotency_key)
        payload = await response.json()
        if response.status == 202:
            answers[(202, "")] += 1
            return uuid.UUID(payload["id"])
        answer = (response.status, payload.get("error", {}).get("code", ""))
        answers[answer] += 1
        assert answer in RETRYABLE, (answer, payload)
        if response.status == 503:
            assert response.headers["Retry-After"].isdigit(), response.headers
        assert time.monotonic() < deadline_s, f"not accepted in time; answers so far: {answers}"
        await asyncio.sleep(RETRY_PAUSE_S)


def outages_counted(dependency: str) -> float:
    """pm_stage_dependency_outages_total for `dependency`, summed over the stages (this process's)."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "pm_stage_dependency_outages":
            total += sum(
                s.value for s in metric.samples if s.name.endswith("_total") and s.labels["dependency"] == dependency
            )
    return total


async def funded_plan(
    pipeline: Any, users: int, intents: int, funds_minor: int
) -> tuple[list[int], list[int], list[tuple[int, int, int]]]:
    """`users` senders funded with `funds_minor` each, as many recipients, and `intents` random P2P
    transfers between them: (senders, recipients, plan of (sender, recipient, amount_minor))."""
    base = random.randrange(10**12, 10**14, 10**6)
    senders, recipients = list(range(base, base + users)), list(range(base + users, base + 2 * users))
    await pipeline.wait_finished([(await pipeline.fund(user, funds_minor)).id for user in senders])
    plan = [(random.choice(senders), random.choice(recipients), random.randint(100, 9_999)) for _ in range(intents)]
    return senders, recipients, plan


async def wait_drained(world: GatewayPipeline, timeout_s: float = 30.0) -> None:
    """Until no group has entries waiting or pending. A batch that met the outage stays pending until it is
    claimed again, even when a duplicate (the feed's retried round, say) already finished its intents."""
    pipeline = world.pipeline
    deadline_s = time.monotonic() + timeout_s
    for stage in pipeline.topology.stages.values():
        while True:
            backlog = await streams.backlog(pipeline.context.redis, stage.stream, stage.group)
            if backlog is None or (backlog.lag, backlog.pending) == (0, 0):
                break
            assert time.monotonic() < deadline_s, (stage.name, backlog)
            await asyncio.sleep(0.1)


async def assert_converged(world: GatewayPipeline, ids: list[uuid.UUID]) -> None:
    """Every intent final exactly once, nothing pending in any group, no dead letter, none flagged, and a
    clean ledger with transit at zero."""
    pipeline = world.pipeline
    pool, redis, topology = pipeline.context.pool, pipeline.context.redis, pipeline.topology
    finals = await pool.fetch(
        "SELECT intent_id, count(*) AS n FROM pm.intent_event WHERE intent_id = ANY($1::uuid[])"
        " AND state = ANY($2::text[]) GROUP BY intent_id",
        ids,
        list(FINISHED),
    )
    assert len(finals) == len(set(ids)) and {row["n"] for row in finals} == {1}
    assert await pool.fetchval("SELECT count(*) FROM pm.intent WHERE id = ANY($1::uuid[]) AND needs_operator", ids) == 0
    for stage in topology.stages.values():
        backlog = await streams.backlog(redis, stage.stream, stage.group)
        assert backlog is None or (backlog.lag, backlog.pending) == (0, 0), (stage.name, backlog)
        assert await redis.xlen(stage.dead_letter_stream) == 0, stage.name
    report = await pipeline.check()
    assert report.ok, report.problems
    assert [t.posted_net for t in report.transit] == [0] and [t.pending_net for t in report.transit] == [0]


async def assert_balances_after(
    balance: Callable[[int], Awaitable[tuple[int, int]]],
    plan: list[tuple[int, int, int]],
    senders: list[int],
    recipients: list[int],
    funds_minor: int,
) -> None:
    """Each sender funded with `funds_minor` paid exactly its transfers of `plan` (sender, recipient,
    amount_minor) and each recipient received exactly its own, with nothing left held: `balance` is a
    pipeline's or a fleet's (posted, pending) of a user."""
    sent: collections.Counter[int] = collections.Counter()
    received: collections.Counter[int] = collections.Counter()
    for sender, recipient, amount_minor in plan:
        sent[sender] += amount_minor
        received[recipient] += amount_minor
    for user in senders:
        assert await balance(user) == (funds_minor - sent[user], 0), user
    for user in recipients:
        assert await balance(user) == (received[user], 0), user
