"""Intents an operator must look at because money may have moved outside the wallet's books: a PSP
reported a payout done for an intent the wallet had already failed (its hold voided or expired), a
decline after it settled, another payment than PM asked for, or refused our reference.

    await flag(pool, [intent_id], "why")      # idempotent per reason; counted in pm_reviews_flagged_total
    await flag_each(pool, {intent_id: "why"})  # a reason per intent, one statement
    rows = await list_flagged(pool, limit)     # `pm review list`
    await reannounce(pool, limit)              # after Redis lost the review stream (the status poller)

A flag writes, in the same statement, an outbox row the outbox worker adds to the review stream
(streams.yaml `review_stream`), for alerting. Nothing here moves money: README "Reviews" says what the
operator does.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from pm.config import metrics

REASON_LENGTH_MAX = 500
# Review events per intent at most: reasons past the text's REASON_LENGTH_MAX are still
# announced, and a PSP that keeps inventing reasons (a new amount in each callback) is not announced forever.
REVIEW_EVENTS_PER_INTENT_MAX = 16
LISTED_MAX = 1_000


_FLAG_SQL = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[]) AS input(id, reason)
), marked AS (
    -- A new reason on an intent already flagged is added to the ones before (an operator reads them all,
    -- and the review stream hears of it); the same reason again changes nothing.
    UPDATE pm.intent i SET needs_review = true,
        review_reason = CASE WHEN i.needs_review THEN left(coalesce(i.review_reason || '; ', '') || input.reason, $3)
                             ELSE input.reason END
    FROM input
    WHERE i.id = input.id
      AND (NOT i.needs_review
           OR (strpos(coalesce(i.review_reason, ''), input.reason) = 0
               -- At most $4 review events per intent, however many reasons a PSP invents.
               AND (SELECT count(*) FROM pm.outbox o WHERE o.kind = 'review' AND o.intent_id = i.id) < $4
               AND (length(coalesce(i.review_reason, '')) < $3
                    -- The text is full (a PSP's long values, many reasons): a new reason is still announced,
                    -- once, though it no longer fits in the text.
                    OR NOT EXISTS (SELECT 1 FROM pm.outbox o WHERE o.kind = 'review' AND o.intent_id = i.id
                                                             AND o.payload->>'reason' = input.reason))))
    RETURNING i.*, input.reason AS new_reason
), outbox AS (
    INSERT INTO pm.outbox (event_id, kind, intent_id, version, payload)
    SELECT gen_random_uuid(), 'review', id, version,
           jsonb_build_object('type', 'intent.review_flagged', 'intent_id', id, 'version', version, 'state', state,
                              'operation_type', operation_type, 'amount_minor', amount_minor, 'currency', currency,
                              'channel', channel, 'sender_id', sender_id, 'recipient_id', recipient_id,
                              'error_code', error_code, 'reason', new_reason, 'flagged_at', now())
    FROM marked
)
SELECT id FROM marked
"""


async def flag(conn: asyncpg.Pool | asyncpg.Connection, intent_ids: list[Any], reason: str) -> int:
    """Mark the intents for review (once per reason each); the number newly marked or given a new reason."""
    assert intent_ids and reason
    return await flag_each(conn, dict.fromkeys((uuid.UUID(str(i)) for i in intent_ids), reason))


async def flag_each(conn: asyncpg.Pool | asyncpg.Connection, reasons: Mapping[Any, str]) -> int:
    """`flag` with a reason per intent, in one statement: {intent_id: why}."""
    assert reasons and all(reasons.values())
    ids = [uuid.UUID(str(intent_id)) for intent_id in reasons]
    assert len(set(ids)) == len(ids), "one reason per intent"
    reasons_cut = [why[:REASON_LENGTH_MAX] for why in reasons.values()]
    marked = await conn.fetch(_FLAG_SQL, ids, reasons_cut, REASON_LENGTH_MAX, REVIEW_EVENTS_PER_INTENT_MAX)
    if marked:
        metrics.REVIEWS_FLAGGED.inc(len(marked))
    return len(marked)


async def list_flagged(conn: asyncpg.Pool | asyncpg.Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, state, operation_type, amount_minor, currency, sender_id, recipient_id, channel, error_code,"
        " review_reason, updated_at FROM pm.intent WHERE needs_review ORDER BY updated_at LIMIT $1",
        min(max(limit, 1), LISTED_MAX),
    )
    return [dict(row) for row in rows]


# The newest delivered review events of intents still flagged, due again now: the review stream lives only
# in Redis, so after Redis lost its data the status poller announces them again (same event ids: a reader
# that saw one before drops the repeat). created_at restarts the retry window, as `pm outbox retry` does.
_REANNOUNCE_SQL = """
UPDATE pm.outbox SET delivered_at = NULL, next_attempt_at = now(), attempts = 0, created_at = now(), gave_up_at = NULL
WHERE id IN (
    SELECT o.id FROM pm.outbox o JOIN pm.intent i ON i.id = o.intent_id
    WHERE o.kind = 'review' AND o.delivered_at IS NOT NULL AND i.needs_review
    ORDER BY o.id DESC
    LIMIT $1
)
"""


async def reannounce(conn: asyncpg.Pool | asyncpg.Connection, limit: int) -> int:
    """Make the newest `limit` delivered review events of still-flagged intents due again; how many."""
    assert limit > 0
    status = await conn.execute(_REANNOUNCE_SQL, limit)
    return int(status.split()[-1])
