"""What `pm reconcile` reads from PostgreSQL: intents and users' history sums, in keyset pages.

Every read is one statement for one page of a bounded size, so a reconciliation of millions of intents
holds one page at a time and never runs one long statement:

    page = await intents_page(conn, after_id, RECONCILE_PAGE_INTENTS_MAX)   # by id, after the cursor
    sums = await history_sums_page(conn, after_user_id, RECONCILE_PAGE_USERS_MAX)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from pm.domain.intent import Intent
from pm.store.intents import INTENT_COLUMNS, intent_from_row

# Intents per page: each costs up to six derived transfer ids in one ledger lookup (below 8189 per request).
RECONCILE_PAGE_INTENTS_MAX = 1_000
# Users per page of history sums: one ledger account lookup each.
RECONCILE_PAGE_USERS_MAX = 1_000

_ZERO_ID = uuid.UUID(int=0)

# The primary key serves the keyset: each page is an index range scan from the cursor.
_INTENTS_PAGE_SQL = f"SELECT {INTENT_COLUMNS} FROM pm.intent WHERE id > $1 ORDER BY id LIMIT $2"

# The next `$2` users after the cursor (the primary key (user_id, intent_id) yields them in order), then
# every history row of exactly those users, summed per currency: what moved on each user's balance.
_HISTORY_SUMS_PAGE_SQL = """
WITH users AS (
    SELECT DISTINCT user_id FROM pm.history WHERE user_id > $1 ORDER BY user_id LIMIT $2
)
SELECT h.user_id, h.currency,
       sum(CASE h.direction WHEN 'CREDIT' THEN h.amount_minor ELSE -h.amount_minor END)::bigint AS net_minor
FROM pm.history h
WHERE h.user_id > $1 AND h.user_id <= (SELECT max(user_id) FROM users)
GROUP BY h.user_id, h.currency
ORDER BY h.user_id, h.currency
"""
_HISTORY_SUMS_OF_SQL = """
SELECT h.user_id, h.currency,
       sum(CASE h.direction WHEN 'CREDIT' THEN h.amount_minor ELSE -h.amount_minor END)::bigint AS net_minor
FROM pm.history h
WHERE h.user_id = ANY($1::bigint[])
GROUP BY h.user_id, h.currency
"""


@dataclass(frozen=True, slots=True)
class HistorySum:
    """What a user's history says moved on their balance in one currency: credits minus debits."""

    user_id: int
    currency: str
    net_minor: int


async def intents_page(conn: asyncpg.Connection | asyncpg.Pool, after_id: uuid.UUID | None, limit: int) -> list[Intent]:
    """Up to `limit` intents with ids above `after_id` (None: from the first), by id."""
    assert 0 < limit <= RECONCILE_PAGE_INTENTS_MAX, limit
    rows = await conn.fetch(_INTENTS_PAGE_SQL, after_id or _ZERO_ID, limit)
    return [intent_from_row(row) for row in rows]


async def history_sums_page(
    conn: asyncpg.Connection | asyncpg.Pool, after_user_id: int, limit: int
) -> list[HistorySum]:
    """The history sums of the next `limit` users above `after_user_id` (0: from the first), by user."""
    assert 0 < limit <= RECONCILE_PAGE_USERS_MAX, limit
    rows = await conn.fetch(_HISTORY_SUMS_PAGE_SQL, after_user_id, limit)
    return [HistorySum(row["user_id"], row["currency"], row["net_minor"]) for row in rows]


async def history_sums_of(conn: asyncpg.Connection | asyncpg.Pool, user_ids: list[int]) -> list[HistorySum]:
    """The history sums of these users (a second look at the ones that did not match)."""
    assert len(user_ids) <= RECONCILE_PAGE_USERS_MAX, len(user_ids)
    rows = await conn.fetch(_HISTORY_SUMS_OF_SQL, user_ids)
    return [HistorySum(row["user_id"], row["currency"], row["net_minor"]) for row in rows]
