"""The benchmark's seeded history (bench/seed.py) on real PostgreSQL: finished intents with their
events, history and idempotency rows, and their `postgres` ledger accounts and transfers, that no PM
process takes up again and that keep the ledger's invariants; and the reason it exists: on the seeded,
analyzed database the stages' batch statements plan index lookups, where on an empty one the cached
plan is a sequential scan of the whole table."""

from __future__ import annotations

import asyncpg
import pytest

from bench.seed import HISTORY_API_KEY_ID, HISTORY_USER_ID_BASE, seed_history
from ledger import accounts
from ledger.check import run_check
from ledger.open import open_ledger
from pm.store.intents import _TRANSITION_SQL_AFTER_READ
from pm.store.migrate import migrate

SEEDED = 3_000
ARGUMENT_TYPES = "uuid[], text[], text[], text[], bigint[], bigint[], jsonb[], text[], text[]"
ARGUMENTS = (
    "ARRAY[gen_random_uuid()], ARRAY['CREATED'], ARRAY['VALIDATED'], ARRAY[NULL::text], ARRAY[NULL::bigint],"
    " ARRAY[NULL::bigint], ARRAY[NULL::jsonb], ARRAY[NULL::text], ARRAY[NULL::text]"
)


async def _generic_plan(connection: asyncpg.Connection) -> str:
    """The plan every pooled connection of a stage keeps for the transition statement (a generic one)."""
    await connection.execute("SET plan_cache_mode = force_generic_plan")
    await connection.execute(f"PREPARE transition ({ARGUMENT_TYPES}) AS {_TRANSITION_SQL_AFTER_READ}")
    try:
        rows = await connection.fetch(f"EXPLAIN EXECUTE transition ({ARGUMENTS})")
    finally:
        await connection.execute("DEALLOCATE transition")
    return "\n".join(row[0] for row in rows)


@pytest.fixture(scope="module")
async def seeded_url(fresh_database) -> str:
    database_url = await fresh_database()
    await migrate(database_url)
    await seed_history(database_url, SEEDED, ledger_url=database_url)
    return database_url


async def test_the_history_is_finished_and_complete(seeded_url: str) -> None:
    connection = await asyncpg.connect(seeded_url)
    try:
        counts = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM pm.intent WHERE api_key_id = $1 AND state = 'SETTLED' AND finished)"
            "   AS intents,"
            " (SELECT count(*) FROM pm.intent WHERE NOT finished) AS unfinished,"
            " (SELECT count(*) FROM pm.intent_event) AS events,"
            " (SELECT count(*) FROM pm.history) AS history,"
            " (SELECT count(*) FROM pm.idempotency WHERE api_key_id = $1) AS idempotency,"
            " (SELECT count(*) FROM pm.intent_event e JOIN pm.outbox_cursor c ON c.name = 'app'"
            "   WHERE (e.xid, e.intent_id, e.version) > (c.xid, c.intent_id, c.version)) AS undelivered,"
            " (SELECT max(now() - created_at) FROM pm.idempotency) AS oldest",
            HISTORY_API_KEY_ID,
        )
    finally:
        await connection.close()
    assert counts["intents"] == SEEDED and counts["unfinished"] == 0
    assert counts["events"] == 6 * SEEDED and counts["history"] == 2 * SEEDED and counts["idempotency"] == SEEDED
    assert counts["undelivered"] == 0  # the outbox feed delivers none of them again
    assert counts["oldest"].total_seconds() < 86_400  # inside the idempotency retention: none purged in a run


async def ledger_named_rows(database_url: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetch(
            "SELECT account_id, name, user_id FROM pm.account_balance_snapshot WHERE user_id >= $1",
            HISTORY_USER_ID_BASE,
        )
    finally:
        await connection.close()


async def test_the_ledger_history_keeps_the_invariants(seeded_url: str) -> None:
    async with open_ledger(seeded_url) as ledger:
        report = await run_check(ledger)
        sender, recipient = await ledger.lookup_accounts(
            [accounts.user(HISTORY_USER_ID_BASE + n, "THB").id for n in (1, 2)]
        )
        named = await ledger_named_rows(seeded_url)
    assert report.ok, report.problems
    # Named in the balance snapshot, each row's name the one its account id is derived from.
    assert len(named) == SEEDED and all(
        row["account_id"] == accounts.user(row["user_id"], "THB").id and row["name"] == f"user:{row['user_id']}:THB"
        for row in named
    )
    assert sum(totals.accounts for totals in report.ledgers.values()) >= 2 + 2  # transit, adjustments, users
    # Each user was funded, then paid and was paid: balances moved, none overdrawn (the check's flags).
    assert sender.debits_posted > 0 and sender.credits_posted > sender.debits_posted
    assert recipient.credits_posted > 0


async def test_the_seeded_database_plans_index_lookups_an_empty_one_does_not(seeded_url: str, fresh_database) -> None:
    empty_url = await fresh_database()
    await migrate(empty_url)
    empty = await asyncpg.connect(empty_url)
    seeded = await asyncpg.connect(seeded_url)
    try:
        # The empty database as the warm-up leaves it: a few rows, not yet analyzed by autovacuum.
        await empty.execute(
            "INSERT INTO pm.intent (id, state, version, operation_type, amount_minor, currency, sender_id,"
            " recipient_id, api_key_id, idempotency_key)"
            " SELECT gen_random_uuid(), 'CREATED', 1, 'P2P_TRANSFER', 100, 'THB', 1, 2, 'k', g::text"
            " FROM generate_series(1, 1000) g"
        )
        empty_plan, seeded_plan = await _generic_plan(empty), await _generic_plan(seeded)
    finally:
        await empty.close()
        await seeded.close()
    assert "Seq Scan on intent" in empty_plan, empty_plan
    assert "Index Scan using intent_pkey on intent" in seeded_plan and "Seq Scan on intent" not in seeded_plan, (
        seeded_plan
    )
