"""Proves the status poller's purge on real PostgreSQL (issue 10, items 5 and 7; issue 12, item 9): idempotency
records older than PM_IDEMPOTENCY_RETENTION_S, request nonces older than their window (NONCE_TTL_S), outbox
rows delivered longer than PM_WEBHOOK_RETENTION_S ago and PSP events older than PM_PSP_EVENT_RETENTION_S are
deleted, oldest first, in rounds of a bounded size and a bounded number of rounds per run, and nothing
younger, nothing undelivered and no intent or intent event is."""

from __future__ import annotations

import uuid

import asyncpg

from consumers.poller import purge_once
from pm.config.constants import NONCE_TTL_S
from pm.domain.intent import OperationType
from pm.store import retention
from tests.support.pipeline import isolated_topology, open_pipeline

RETENTION_S = 86_400


async def _add_records(pool: asyncpg.Pool, ages_s: list[int]) -> list[str]:
    """Idempotency records this many seconds old; their keys, in the same order."""
    keys = [uuid.uuid4().hex for _ in ages_s]
    await pool.execute(
        "INSERT INTO pm.idempotency (api_key_id, user_id, idempotency_key, request_hash, created_at)"
        " SELECT 'purge-test', 5, k, 'h', now() - make_interval(secs => a)"
        " FROM unnest($1::text[], $2::int[]) AS u(k, a)",
        keys,
        ages_s,
    )
    return keys


async def _add_nonces(pool: asyncpg.Pool, ages_s: list[int]) -> list[str]:
    nonces = [uuid.uuid4().hex for _ in ages_s]
    await pool.execute(
        "INSERT INTO pm.request_nonce (api_key_id, nonce, created_at)"
        " SELECT 'purge-test', n, now() - make_interval(secs => a) FROM unnest($1::text[], $2::int[]) AS u(n, a)",
        nonces,
        ages_s,
    )
    return nonces


async def _records_left(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch("SELECT idempotency_key FROM pm.idempotency WHERE api_key_id = 'purge-test'")
    return {row["idempotency_key"] for row in rows}


async def _nonces_left(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch("SELECT nonce FROM pm.request_nonce WHERE api_key_id = 'purge-test'")
    return {row["nonce"] for row in rows}


async def test_only_records_past_retention_go_oldest_first_in_bounded_rounds(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        pool = pipeline.context.pool
        # 25 past the retention (the oldest first in the list), 10 within it (by an hour or a minute).
        await _add_records(pool, [RETENTION_S + 3_600 * (25 - i) for i in range(25)])
        kept = await _add_records(pool, [RETENTION_S - 3_600] * 5 + [RETENTION_S - 60] * 5)
        rounds = [await retention.purge_idempotency(pool, RETENTION_S, 10) for _ in range(4)]
        assert rounds == [10, 10, 5, 0]
        assert await _records_left(pool) == set(kept)

        expired = await _add_records(pool, [RETENTION_S + 3_600 * (25 - i) for i in range(25)])
        assert await retention.purge_idempotency(pool, RETENTION_S, 10) == 10
        assert await _records_left(pool) == set(kept) | set(expired[10:])  # the ten oldest went first


async def test_a_poller_run_is_bounded_and_the_rest_waits_for_the_next(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        pool = pipeline.context.pool
        pipeline.context.idempotency_retention_s = RETENTION_S
        await _add_records(pool, [RETENTION_S + 10 + i for i in range(25)])
        kept_records = await _add_records(pool, [RETENTION_S - 10] * 3)
        await _add_nonces(pool, [NONCE_TTL_S + 10 + i for i in range(14)])
        # A nonce is kept past the whole window a signed timestamp can be accepted in (±300 s).
        assert NONCE_TTL_S > 2 * 300
        kept_nonces = await _add_nonces(pool, [NONCE_TTL_S - 10] * 4)

        # Rounds of 4 rows, at most 3 rounds per table per run: 12 each, then the rest next time.
        assert await purge_once(pipeline.context, round_rows_max=4, rounds_max=3) == (12, 12, 0, 0)
        assert await purge_once(pipeline.context, round_rows_max=4, rounds_max=3) == (12, 2, 0, 0)
        assert await purge_once(pipeline.context, round_rows_max=4, rounds_max=3) == (1, 0, 0, 0)
        assert await purge_once(pipeline.context, round_rows_max=4, rounds_max=3) == (0, 0, 0, 0)
        assert await _records_left(pool) == set(kept_records)
        assert await _nonces_left(pool) == set(kept_nonces)


WEBHOOK_RETENTION_S = 7 * 86_400
PSP_EVENT_RETENTION_S = 30 * 86_400


async def _add_outbox(pool: asyncpg.Pool, intent_id: uuid.UUID, delivered_ages_s: list[int | None]) -> list[int]:
    """Outbox rows of one intent (versions 1, 2, ...) delivered this many seconds ago (None: never), all
    made a year ago; their ids, in the same order."""
    rows = await pool.fetch(
        "INSERT INTO pm.outbox (event_id, kind, intent_id, version, merchant_id, payload, delivered_at, created_at)"
        " SELECT gen_random_uuid(), 'merchant_webhook', $1, v, 7, '{}'::jsonb,"
        "        now() - make_interval(secs => a), now() - interval '365 days'"
        " FROM unnest($2::int[]) WITH ORDINALITY AS u(a, v) ORDER BY v RETURNING id",
        intent_id,
        delivered_ages_s,
    )
    return [row["id"] for row in rows]


async def _add_psp_events(pool: asyncpg.Pool, intent_id: uuid.UUID, ages_s: list[int]) -> list[str]:
    event_ids = [uuid.uuid4().hex for _ in ages_s]
    await pool.execute(
        "INSERT INTO pm.psp_event (channel, event_id, intent_id, status, received_at)"
        " SELECT 'IPPS_TRANSFER', e, $1, 'SUCCEEDED', now() - make_interval(secs => a)"
        " FROM unnest($2::text[], $3::int[]) AS u(e, a)",
        intent_id,
        event_ids,
        ages_s,
    )
    return event_ids


async def test_delivered_webhooks_and_psp_events_past_retention_go_and_the_record_stays(
    fresh_database, redis_url
) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        pool, context = pipeline.context.pool, pipeline.context
        context.webhook_retention_s, context.psp_event_retention_s = WEBHOOK_RETENTION_S, PSP_EVENT_RETENTION_S
        intent = await pipeline.submit(OperationType.P2P_TRANSFER, 100, 1, 2, publish=False)
        # 9 delivered past the retention; kept: 2 delivered within it, 3 never delivered (a year old), 1 given up.
        old = [WEBHOOK_RETENTION_S + 60 * (9 - i) for i in range(9)]
        expired_rows = await _add_outbox(pool, intent.id, [*old, WEBHOOK_RETENTION_S - 60, 60, None, None, None])
        given_up = expired_rows[-1]
        await pool.execute("UPDATE pm.outbox SET gave_up_at = now() - interval '300 days' WHERE id = $1", given_up)
        kept_rows = set(expired_rows[9:])
        expired_events = await _add_psp_events(
            pool, intent.id, [PSP_EVENT_RETENTION_S + 60 * (7 - i) for i in range(7)]
        )
        kept_events = await _add_psp_events(pool, intent.id, [PSP_EVENT_RETENTION_S - 60, 5])
        events_before = await pool.fetchval("SELECT count(*) FROM pm.intent_event WHERE intent_id = $1", intent.id)

        # The oldest go first, a bounded round at a time.
        assert await retention.purge_delivered_outbox(pool, WEBHOOK_RETENTION_S, 4) == 4
        left = {row["id"] for row in await pool.fetch("SELECT id FROM pm.outbox WHERE intent_id = $1", intent.id)}
        assert left == set(expired_rows[4:])
        # A run: rounds of 2, at most 2 rounds per table; then the rest on the next run.
        assert await purge_once(context, round_rows_max=2, rounds_max=2) == (0, 0, 4, 4)
        assert await purge_once(context, round_rows_max=2, rounds_max=2) == (0, 0, 1, 3)
        assert await purge_once(context, round_rows_max=2, rounds_max=2) == (0, 0, 0, 0)

        left = {row["id"] for row in await pool.fetch("SELECT id FROM pm.outbox WHERE intent_id = $1", intent.id)}
        assert left == kept_rows
        events = {
            row["event_id"]
            for row in await pool.fetch("SELECT event_id FROM pm.psp_event WHERE intent_id = $1", intent.id)
        }
        assert events == set(kept_events) and not events & set(expired_events)
        # The intent and its event rows are the record: untouched.
        assert await pool.fetchval("SELECT count(*) FROM pm.intent WHERE id = $1", intent.id) == 1
        assert (
            await pool.fetchval("SELECT count(*) FROM pm.intent_event WHERE intent_id = $1", intent.id) == events_before
        )
