"""Rows kept for a retention, then deleted a bounded round at a time by the status poller (issue 12, item 9).

    deleted = await purge_idempotency(pool, retention_s=86_400, limit=5_000)         # rows gone, <= limit
    deleted = await purge_nonces(pool, retention_s=660, limit=5_000)
    deleted = await purge_delivered_outbox(pool, retention_s=604_800, limit=5_000)
    deleted = await purge_psp_events(pool, retention_s=2_592_000, limit=5_000)

Only what has served its purpose goes: an idempotency record past PM_IDEMPOTENCY_RETENTION_S (its key may
then name a new intent), a request nonce past its replay window, an outbox row once delivered (an
undelivered or given-up one waits for the worker or an operator, whatever its age), a PSP callback event
once older than any resend of it.
Intents and their event rows are the record and are never deleted. Each round is one statement, oldest
first, SKIP LOCKED (several pollers share the work instead of waiting on each other's rows).
"""

from __future__ import annotations

import asyncpg

_PURGE_IDEMPOTENCY_SQL = """
DELETE FROM pm.idempotency WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM pm.idempotency WHERE created_at < now() - make_interval(secs => $1)
    ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
_PURGE_NONCES_SQL = """
DELETE FROM pm.request_nonce WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM pm.request_nonce WHERE created_at < now() - make_interval(secs => $1)
    ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
_PURGE_DELIVERED_OUTBOX_SQL = """
DELETE FROM pm.outbox WHERE id = ANY(ARRAY(
    SELECT id FROM pm.outbox
    WHERE delivered_at IS NOT NULL AND delivered_at < now() - make_interval(secs => $1)
    ORDER BY delivered_at LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
_PURGE_PSP_EVENTS_SQL = """
DELETE FROM pm.psp_event WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM pm.psp_event WHERE received_at < now() - make_interval(secs => $1)
    ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""


async def purge_idempotency(conn: asyncpg.Connection | asyncpg.Pool, retention_s: float, limit: int) -> int:
    """Delete at most `limit` idempotency records older than `retention_s` (oldest first); how many went.
    A key whose record went may be used again, for a new intent."""
    assert retention_s > 0 and limit > 0
    return _deleted(await conn.execute(_PURGE_IDEMPOTENCY_SQL, float(retention_s), limit))


async def purge_nonces(conn: asyncpg.Connection | asyncpg.Pool, retention_s: float, limit: int) -> int:
    """Delete at most `limit` request nonces older than `retention_s` (oldest first); how many went."""
    assert retention_s > 0 and limit > 0
    return _deleted(await conn.execute(_PURGE_NONCES_SQL, float(retention_s), limit))


async def purge_delivered_outbox(conn: asyncpg.Connection | asyncpg.Pool, retention_s: float, limit: int) -> int:
    """Delete at most `limit` outbox rows delivered more than `retention_s` ago (oldest first); how many went."""
    assert retention_s > 0 and limit > 0
    return _deleted(await conn.execute(_PURGE_DELIVERED_OUTBOX_SQL, float(retention_s), limit))


async def purge_psp_events(conn: asyncpg.Connection | asyncpg.Pool, retention_s: float, limit: int) -> int:
    """Delete at most `limit` PSP callback events received more than `retention_s` ago (oldest first).
    A PSP resending an event after that is no longer recognised as a duplicate: the intent is final by
    then, so it moves nothing (a success for a failed intent flags it for review again)."""
    assert retention_s > 0 and limit > 0
    return _deleted(await conn.execute(_PURGE_PSP_EVENTS_SQL, float(retention_s), limit))


def _deleted(status: str) -> int:
    verb, _, count = status.partition(" ")
    assert verb == "DELETE", status
    return int(count)
