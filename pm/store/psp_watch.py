"""The PSP watch table (sql/0010): payments PM voided at its deadline, asked about until their PSP answers
finally (the policy is consumers/psp_watch.py's).

    await watch(conn, intent_ids)                   # idempotent: a payment is watched once
    due = await take_due(pool, CHECK_BATCH_MAX)      # [(window_over, Intent)], next checks scheduled
    await end(pool, intent_ids)
"""

from __future__ import annotations

import uuid

import asyncpg

from pm.domain.intent import Intent
from pm.store.intents import INTENT_COLUMNS, intent_from_row

WATCH_WINDOW_S = 24 * 3_600  # asked for this long after the void; then an operator looks
FIRST_CHECK_S = 30  # the first check after the void; each later one waits twice as long ...
CHECK_BACKOFF_MAX_S = 3_600  # ... up to an hour
CHECK_BATCH_MAX = 100

_WATCH_SQL = """
INSERT INTO pm.psp_watch (intent_id, watch_until, next_check_at)
SELECT id, now() + make_interval(secs => $2), now() + make_interval(secs => $3) FROM unnest($1::uuid[]) AS u(id)
ON CONFLICT (intent_id) DO NOTHING
"""
# Takes the due watches and schedules their next check at once, so a crash mid-round only delays them.
_TAKE_SQL = f"""
WITH due AS (
    UPDATE pm.psp_watch w SET checks = w.checks + 1,
        next_check_at = now() + make_interval(secs => least($2 * power(2, w.checks), $3))
    WHERE w.intent_id IN (
        SELECT intent_id FROM pm.psp_watch WHERE next_check_at <= now() ORDER BY next_check_at LIMIT $1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING w.intent_id, w.watch_until <= now() AS window_over
)
SELECT due.window_over, {", ".join("i." + c for c in INTENT_COLUMNS.split(", "))}
FROM due JOIN pm.intent i ON i.id = due.intent_id
"""
_END_SQL = "DELETE FROM pm.psp_watch WHERE intent_id = ANY($1::uuid[])"


async def watch(conn: asyncpg.Connection | asyncpg.Pool, intent_ids: list[uuid.UUID]) -> None:
    if intent_ids:
        await conn.execute(_WATCH_SQL, intent_ids, float(WATCH_WINDOW_S), float(FIRST_CHECK_S))


async def take_due(pool: asyncpg.Pool, limit: int = CHECK_BATCH_MAX) -> list[tuple[bool, Intent]]:
    """Up to `limit` due watches, each with whether its window is over; their next checks scheduled."""
    assert 0 < limit <= CHECK_BATCH_MAX, limit
    rows = await pool.fetch(_TAKE_SQL, limit, float(FIRST_CHECK_S), float(CHECK_BACKOFF_MAX_S))
    return [(row["window_over"], intent_from_row(row)) for row in rows]


async def end(pool: asyncpg.Pool, intent_ids: list[uuid.UUID]) -> None:
    if intent_ids:
        await pool.execute(_END_SQL, intent_ids)
