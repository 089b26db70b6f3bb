"""The status poller's re-drive round reads only the unfinished intents older than `stuck_after_s`, on
real PostgreSQL: their `created_at` bounds the scan of the partial index intent_unfinished. Without the
bound a round read every intent in flight from the heap (under load thousands, once per stage per
second: measured 12 ms a statement at 1,000 intents/s, a tenth of PostgreSQL's time), and found none."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from consumers import poller
from pm.domain.intent import OperationType, State
from pm.store import intents as store
from pm.store.migrate import migrate

_users = itertools.count(820_001)
FRESH_INTENTS = 200
STUCK_AFTER_S = 30.0


async def _create(pool, count: int) -> list[uuid.UUID]:
    new = []
    for _ in range(count):
        sender = next(_users)
        new.append(
            store.NewIntent(
                api_key_id="redrive-scan", idempotency_key=uuid.uuid4().hex, request_hash=b"h",
                operation_type=OperationType.P2P_TRANSFER, amount_minor=1_500, currency="THB",
                sender_id=sender, recipient_id=sender + 1, operator_id=None,
            )
        )  # fmt: skip
    outcomes = await store.create_intents(pool, new)
    assert all(outcome.created is not None for outcome in outcomes)
    return [outcome.created.id for outcome in outcomes]


def _scans_of_intent(plan: dict) -> list[dict]:
    """Every node of the plan that reads pm.intent through intent_unfinished."""
    found = [plan] if plan.get("Index Name") == "intent_unfinished" else []
    for child in plan.get("Plans", []):
        found += _scans_of_intent(child)
    return found


@pytest.fixture
async def own_pool(fresh_database) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database of this test's own: the counts below are exactly its intents."""
    database_url = await fresh_database()
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_redrive_round_reads_only_intents_older_than_stuck_after_s(own_pool) -> None:
    fresh = await _create(own_pool, FRESH_INTENTS)
    (stuck,) = await _create(own_pool, 1)
    await own_pool.execute(
        "UPDATE pm.intent SET created_at = now() - interval '1 hour', updated_at = now() - interval '1 hour'"
        " WHERE id = $1",
        stuck,
    )
    args = ([str(State.CREATED)], STUCK_AFTER_S, 1_000)
    async with own_pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("SET LOCAL enable_seqscan = off")  # a table this small would be read whole
            plan_text = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + poller._REDRIVE_SQL, *args)
        finally:
            await transaction.rollback()  # EXPLAIN ANALYZE ran the update
    (scan,) = _scans_of_intent(json.loads(plan_text)[0]["Plan"])
    assert "created_at" in scan.get("Index Cond", ""), scan
    assert scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) == 1, scan  # the stuck one, not 201

    rows = await own_pool.fetch(poller._REDRIVE_SQL, *args)
    assert [row["id"] for row in rows] == [stuck]
    # A fresh intent stuck past stuck_after_s is found by the same bound: created before it changed.
    old_fresh = fresh[0]
    await own_pool.execute(
        "UPDATE pm.intent SET created_at = created_at - interval '31 seconds',"
        " updated_at = updated_at - interval '31 seconds' WHERE id = $1",
        old_fresh,
    )
    rows = await own_pool.fetch(poller._REDRIVE_SQL, *args)
    assert [row["id"] for row in rows] == [old_fresh]
