"""Mini-app allowances (sql/0018): what a user lets a merchant charge per day without asking.

    await grant(pool, user_id, merchant_id, "THB", daily_max_minor)     # PUT /api/pm/allowances/{merchant}
    await revoke(pool, user_id, merchant_id)                             # DELETE
    await list_for_user(pool, user_id, day)                              # GET
    covered = await reserve(pool, [Reservation(...), ...])               # validation: ids covered
    await release(conn, intent_ids)                                      # history: REJECTED/FAILED charges

A reservation is one conditional upsert on the (user, merchant, currency, day) usage row: the row's
lock serializes concurrent charges and `used_minor + amount <= cap` is checked against the row as
committed, so together they never take more than the cap. Each intent reserves at most once (its
reservation row), and is given back at most once (`released_at`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

ALLOWANCES_PER_USER_MAX = 1000  # what GET lists at most


@dataclass(frozen=True, slots=True)
class Reservation:
    intent_id: uuid.UUID
    user_id: int
    merchant_id: int
    currency: str
    day: date
    amount_minor: int

    def __post_init__(self) -> None:
        assert self.amount_minor > 0 and self.user_id > 0 and self.merchant_id > 0


class ReservationRaced(RuntimeError):
    """Two deliveries of one intent reserved at once; the later one rolled back (the batch is retried)."""


async def grant(
    pool: asyncpg.Pool, user_id: int, merchant_id: int, currency: str, daily_max_minor: int
) -> asyncpg.Record:
    assert daily_max_minor > 0
    return await pool.fetchrow(
        """
        INSERT INTO pm.miniapp_allowance (user_id, merchant_id, currency, daily_max_minor)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (user_id, merchant_id, currency)
            DO UPDATE SET daily_max_minor = EXCLUDED.daily_max_minor, granted_at = clock_timestamp()
        RETURNING user_id, merchant_id, currency, daily_max_minor, granted_at
        """,
        user_id, merchant_id, currency, daily_max_minor,
    )  # fmt: skip


async def revoke(pool: asyncpg.Pool, user_id: int, merchant_id: int) -> int:
    """Every currency's allowance of this user for this merchant; how many rows went."""
    status = await pool.execute(
        "DELETE FROM pm.miniapp_allowance WHERE user_id = $1 AND merchant_id = $2", user_id, merchant_id
    )
    return int(status.split()[-1])


async def list_for_user(pool: asyncpg.Pool, user_id: int, day: date) -> list[asyncpg.Record]:
    return await pool.fetch(
        """
        SELECT a.merchant_id, a.currency, a.daily_max_minor, coalesce(u.used_minor, 0) AS used_today_minor,
               a.granted_at
        FROM pm.miniapp_allowance a
        LEFT JOIN pm.miniapp_allowance_usage u
            ON u.user_id = a.user_id AND u.merchant_id = a.merchant_id AND u.currency = a.currency AND u.day = $2
        WHERE a.user_id = $1
        ORDER BY a.merchant_id, a.currency
        LIMIT $3
        """,
        user_id, day, ALLOWANCES_PER_USER_MAX,
    )  # fmt: skip


# One round: every (user, merchant, currency, day) at most once (ON CONFLICT DO UPDATE may touch a row
# once per statement). `fresh`: still CREATED (a stale redelivery of a charge already waiting for its
# user must not take a place it would never give back before its end), not reserved before (a
# redelivery keeps its first answer) and under an allowance. The upsert adds the amount only where it
# still fits the cap, re-checked under the row lock.
_RESERVE_SQL = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[], $5::date[], $6::bigint[])
        AS r(intent_id, user_id, merchant_id, currency, day, amount_minor)
), fresh AS (
    SELECT input.*, a.daily_max_minor FROM input
    JOIN pm.miniapp_allowance a USING (user_id, merchant_id, currency)
    JOIN pm.intent i ON i.id = input.intent_id AND i.state = 'CREATED'
    WHERE input.amount_minor <= a.daily_max_minor
      AND NOT EXISTS (SELECT 1 FROM pm.miniapp_allowance_reservation r WHERE r.intent_id = input.intent_id)
), used AS (
    INSERT INTO pm.miniapp_allowance_usage AS u (user_id, merchant_id, currency, day, used_minor)
    SELECT user_id, merchant_id, currency, day, amount_minor FROM fresh
    ON CONFLICT (user_id, merchant_id, currency, day) DO UPDATE
        SET used_minor = u.used_minor + EXCLUDED.used_minor
        WHERE u.used_minor + EXCLUDED.used_minor
            <= (SELECT daily_max_minor FROM pm.miniapp_allowance a
                WHERE a.user_id = u.user_id AND a.merchant_id = u.merchant_id AND a.currency = u.currency)
    RETURNING user_id, merchant_id, currency, day
), reserved AS (
    INSERT INTO pm.miniapp_allowance_reservation (intent_id, user_id, merchant_id, currency, day, amount_minor)
    SELECT fresh.intent_id, fresh.user_id, fresh.merchant_id, fresh.currency, fresh.day, fresh.amount_minor
    FROM fresh JOIN used USING (user_id, merchant_id, currency, day)
    ON CONFLICT (intent_id) DO NOTHING
    RETURNING intent_id
)
SELECT (SELECT count(*) FROM used) AS used_rows, ARRAY(SELECT intent_id FROM reserved) AS covered
"""

_RESERVED_BEFORE_SQL = """
SELECT intent_id FROM pm.miniapp_allowance_reservation WHERE intent_id = ANY($1::uuid[])
"""


async def reserve(pool: asyncpg.Pool, requests: list[Reservation]) -> set[uuid.UUID]:
    """The intents an allowance covers (reserved now, or by an earlier delivery); the rest need their
    user's confirmation. Rounds of distinct keys, one statement each, in one transaction."""
    if not requests:
        return set()
    ids = [request.intent_id for request in requests]
    assert len(set(ids)) == len(ids), "one reservation per intent per batch"
    async with pool.acquire() as conn, conn.transaction():
        covered = {row["intent_id"] for row in await conn.fetch(_RESERVED_BEFORE_SQL, ids)}
        for round_ in _rounds([request for request in requests if request.intent_id not in covered]):
            row = await conn.fetchrow(_RESERVE_SQL, *_columns(round_))
            if row["used_rows"] != len(row["covered"]):
                # Another delivery of one of these intents reserved it first (committed while this one
                # waited for the usage row's lock): roll back this round's additions, retry the batch.
                raise ReservationRaced("a reservation raced another delivery of its intent")
            covered |= set(row["covered"])
    return covered


def _rounds(requests: list[Reservation]) -> list[list[Reservation]]:
    rounds: list[list[Reservation]] = []
    for request in requests:
        key = (request.user_id, request.merchant_id, request.currency, request.day)
        for round_ in rounds:
            if all((r.user_id, r.merchant_id, r.currency, r.day) != key for r in round_):
                round_.append(request)
                break
        else:
            rounds.append([request])
    return rounds


def _columns(requests: list[Reservation]) -> tuple[list[Any], ...]:
    return (
        [r.intent_id for r in requests],
        [r.user_id for r in requests],
        [r.merchant_id for r in requests],
        [r.currency for r in requests],
        [r.day for r in requests],
        [r.amount_minor for r in requests],
    )


# Give back the reservations of charges that ended without paying: each once (released_at), summed per
# usage row so one UPDATE touches each row once.
_RELEASE_SQL = """
WITH released AS (
    UPDATE pm.miniapp_allowance_reservation SET released_at = clock_timestamp()
    WHERE intent_id = ANY($1::uuid[]) AND released_at IS NULL
    RETURNING user_id, merchant_id, currency, day, amount_minor
), summed AS (
    SELECT user_id, merchant_id, currency, day, sum(amount_minor) AS amount_minor
    FROM released GROUP BY user_id, merchant_id, currency, day
)
UPDATE pm.miniapp_allowance_usage u SET used_minor = u.used_minor - summed.amount_minor
FROM summed
WHERE u.user_id = summed.user_id AND u.merchant_id = summed.merchant_id
  AND u.currency = summed.currency AND u.day = summed.day
"""


async def release(conn: asyncpg.Connection | asyncpg.Pool, intent_ids: list[uuid.UUID]) -> None:
    if intent_ids:
        await conn.execute(_RELEASE_SQL, intent_ids)
