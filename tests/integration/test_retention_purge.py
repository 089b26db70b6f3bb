"""Proves the status poller's purge on real PostgreSQL (issue 10, items 5 and 7): idempotency records older
than PM_IDEMPOTENCY_RETENTION_S and request nonces older than their window (NONCE_TTL_S) are deleted, oldest
first, in rounds of a bounded size and a bounded number of rounds per run, and nothing younger is."""

from __future__ import annotations

import uuid

import asyncpg

from consumers.poller import purge_once
from pm.config.constants import NONCE_TTL_S
from pm.store import intents
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
        rounds = [await intents.purge_idempotency(pool, RETENTION_S, 10) for _ in range(4)]
        assert rounds == [10, 10, 5, 0]
        assert await _records_left(pool) == set(kept)

        expired = await _add_records(pool, [RETENTION_S + 3_600 * (25 - i) for i in range(25)])
        assert await intents.purge_idempotency(pool, RETENTION_S, 10) == 10
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
        assert await purge_once(pipeline.context, round_rows_max=4, rounds_max=3) == (12, 12)
        assert await purge_once(pipeline.context, round_rows_max=4, rounds_max=3) == (12, 2)
        assert await purge_once(pipeline.context, round_rows_max=4, rounds_max=3) == (1, 0)
        assert await purge_once(pipeline.context, round_rows_max=4, rounds_max=3) == (0, 0)
        assert await _records_left(pool) == set(kept_records)
        assert await _nonces_left(pool) == set(kept_nonces)
