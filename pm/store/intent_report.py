"""What `pm intents show` and `pm intents stuck` read: one intent's events, PSP events and webhooks, and the
non-final intents older than a threshold. Each read is one bounded statement on an index.

    events = await events_of(conn, intent_id)            # versions with their times, oldest first
    stuck = await stuck_intents(conn, older_than_s, limit)
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from pm.domain.intent import TERMINAL_STATE_NAMES

# An intent has a handful of versions, PSP events and webhooks; these bound a pathological one.
EVENTS_SHOWN_MAX = 100
PSP_EVENTS_SHOWN_MAX = 100
WEBHOOKS_SHOWN_MAX = 100
STUCK_LISTED_MAX = 10_000

_EVENTS_SQL = """
SELECT version, state, error_code, error_message, created_at FROM pm.intent_event
WHERE intent_id = $1 ORDER BY version LIMIT $2
"""
# The index psp_event_by_intent (sql/0013) serves it.
_PSP_EVENTS_SQL = """
SELECT channel, event_id, status, received_at FROM pm.psp_event
WHERE intent_id = $1 ORDER BY received_at, event_id LIMIT $2
"""
# The unique (intent_id, version, kind) serves it.
_WEBHOOKS_SQL = """
SELECT id, kind, version, merchant_id, attempts, next_attempt_at, delivered_at, gave_up_at, last_error, created_at
FROM pm.outbox WHERE intent_id = $1 ORDER BY version, id LIMIT $2
"""
_FLAGS_SQL = """
SELECT needs_operator, needs_review, review_reason, finished, redriven_at, api_key_id FROM pm.intent WHERE id = $1
"""
# Not final, so not finished: the partial index intent_unfinished (created_at) WHERE NOT finished serves it,
# oldest first.
_STUCK_SQL = """
SELECT id, state, version, operation_type, amount_minor, currency, channel, needs_operator, created_at,
       updated_at, redriven_at, extract(epoch FROM clock_timestamp() - created_at)::float8 AS age_s
FROM pm.intent
WHERE NOT finished AND state <> ALL($1::text[]) AND created_at < clock_timestamp() - make_interval(secs => $2)
ORDER BY created_at
LIMIT $3
"""


async def events_of(conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(_EVENTS_SQL, intent_id, EVENTS_SHOWN_MAX)]


async def psp_events_of(conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(_PSP_EVENTS_SQL, intent_id, PSP_EVENTS_SHOWN_MAX)]


async def webhooks_of(conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(_WEBHOOKS_SQL, intent_id, WEBHOOKS_SHOWN_MAX)]


async def flags_of(conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(_FLAGS_SQL, intent_id)
    return dict(row) if row else None


async def stuck_intents(
    conn: asyncpg.Connection | asyncpg.Pool, older_than_s: float, limit: int
) -> list[dict[str, Any]]:
    """Non-final intents created more than `older_than_s` ago, oldest first, at most `limit`."""
    assert older_than_s >= 0 and 0 < limit <= STUCK_LISTED_MAX, (older_than_s, limit)
    rows = await conn.fetch(_STUCK_SQL, list(TERMINAL_STATE_NAMES), float(older_than_s), limit)
    return [dict(row) for row in rows]
