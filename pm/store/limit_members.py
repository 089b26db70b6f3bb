"""What PostgreSQL says a limit counter holds, the truth a missing Redis counter is rebuilt from (DESIGN.md
§6; pm/redis/limit_counters.py decides with it).

    members = await rebuild_members(pool, counters)    # counter key -> the intents it holds: one query
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from pm.config.constants import LIMIT_REBUILD_INTENTS_MAX
from pm.domain.intent import State
from pm.domain.limits import EXEMPT_OPERATIONS, Counter, Member


class LimitRebuildError(RuntimeError):
    """A counter cannot be rebuilt within LIMIT_REBUILD_INTENTS_MAX intents (an operator must look)."""


COUNTED_STATES = (State.CLEARED, State.AUTHORIZED, State.SETTLED)
_REBUILD_SQL = """
SELECT c.position, m.id, m.amount_minor, m.state
FROM unnest($1::int[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[], $10::text[])
    AS c(position, user_id, starts_at, ends_at, operation_type, tag, currency)
CROSS JOIN LATERAL (
    SELECT i.id, i.amount_minor, i.state
    FROM pm.intent i
    WHERE i.sender_id = c.user_id
      AND i.created_at >= c.starts_at AND i.created_at < c.ends_at
      AND i.currency = c.currency
      AND i.operation_type <> ALL($7::text[])
      AND (c.operation_type IS NULL OR i.operation_type = c.operation_type)
      AND (c.tag IS NULL OR c.tag = ANY(i.tags))
      AND (i.state = ANY($8::text[]) OR (i.state = 'PRICED' AND NOT i.needs_operator))
    LIMIT $9
) m
"""


async def rebuild_members(pool: asyncpg.Pool, counters: Sequence[Counter]) -> dict[str, list[Member]]:
    """The intents each counter holds according to PostgreSQL: one query for all of them."""
    unique = list({counter.key: counter for counter in counters}.values())
    rows = await pool.fetch(
        _REBUILD_SQL,
        list(range(len(unique))),
        [counter.user_id for counter in unique],
        [counter.window.starts_at for counter in unique],
        [counter.window.ends_at for counter in unique],
        [counter.rule.operation_type for counter in unique],
        [counter.rule.tag for counter in unique],
        [str(operation) for operation in EXEMPT_OPERATIONS],
        [str(state) for state in COUNTED_STATES],
        LIMIT_REBUILD_INTENTS_MAX + 1,
        # The rule's currency, as counters_for matches it: a counter holds only intents in its currency.
        [counter.currency for counter in unique],
    )
    members: dict[str, list[Member]] = {counter.key: [] for counter in unique}
    for row in rows:
        members[unique[row["position"]].key].append(
            Member(row["id"], row["amount_minor"], row["state"] != State.PRICED)
        )
    for key, found in members.items():
        if len(found) > LIMIT_REBUILD_INTENTS_MAX:
            raise LimitRebuildError(f"{key}: more than {LIMIT_REBUILD_INTENTS_MAX} intents in one period")
    return members
