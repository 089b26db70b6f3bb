"""Intents in PostgreSQL: create, compare-and-set transitions, reads. One SQL statement per batch.

Every function takes an asyncpg connection (or pool) and does exactly one round trip, so callers
batch: the gateway creates one intent per statement, a stage applies a whole batch of transitions
in one statement.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from pm.domain import Intent, OperationType, State, Transition

INTENT_COLUMNS = (
    "id, state, version, operation_type, amount_minor, currency, sender_id, recipient_id, channel, "
    "fee_pre_minor, fee_post_minor, tags, operator_id, error_code, error_message, created_at, updated_at, "
    "fee_rules"
)
HISTORY_PAGE_MAX = 200


def intent_from_row(row: asyncpg.Record) -> Intent:
    fee_rules = row["fee_rules"]
    if isinstance(fee_rules, str):
        fee_rules = json.loads(fee_rules)
    return Intent(
        id=row["id"],
        state=State(row["state"]),
        version=row["version"],
        operation_type=OperationType(row["operation_type"]),
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        sender_id=row["sender_id"],
        recipient_id=row["recipient_id"],
        channel=row["channel"],
        fee_pre_minor=row["fee_pre_minor"],
        fee_post_minor=row["fee_post_minor"],
        tags=tuple(row["tags"]),
        operator_id=row["operator_id"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        fee_rules=tuple(fee_rules or ()),
    )


# -- creating ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    request_hash: bytes
    intent_id: uuid.UUID | None
    response_status: int | None
    response_body: Any
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    """Either the intent was created now, or the key was taken before (`existing` says by what)."""

    created: Intent | None
    existing: IdempotencyRecord | None


_CREATE_SQL = f"""
WITH claim AS (
    INSERT INTO pm.idempotency (api_key_id, idempotency_key, request_hash, intent_id)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT DO NOTHING
    RETURNING intent_id
), created AS (
    INSERT INTO pm.intent (id, state, version, operation_type, amount_minor, currency, sender_id,
                           recipient_id, operator_id, tags, api_key_id, idempotency_key)
    SELECT $4, 'CREATED', 1, $5, $6, $7, $8, $9, $10, $11, $1, $2 FROM claim
    RETURNING {INTENT_COLUMNS}
), event AS (
    INSERT INTO pm.intent_event (intent_id, version, state, created_at)
    SELECT id, version, state, created_at FROM created
)
SELECT true AS created, c.*, NULL::bytea AS request_hash, NULL::int AS response_status,
       NULL::jsonb AS response_body, NULL::timestamptz AS claimed_at, NULL::uuid AS claimed_intent_id
FROM created c
UNION ALL
SELECT false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, i.request_hash, i.response_status, i.response_body, i.created_at, i.intent_id
FROM pm.idempotency i
WHERE i.api_key_id = $1 AND i.idempotency_key = $2 AND NOT EXISTS (SELECT 1 FROM claim)
"""


async def create_intent(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    api_key_id: str,
    idempotency_key: str,
    request_hash: bytes,
    operation_type: OperationType,
    amount_minor: int,
    currency: str,
    sender_id: int | None,
    recipient_id: int | None,
    operator_id: int | None,
    tags: list[str],
) -> CreateOutcome:
    """Claim the idempotency key and insert the intent (CREATED, version 1) in one statement."""
    assert amount_minor > 0
    row = await conn.fetchrow(
        _CREATE_SQL,
        api_key_id,
        idempotency_key,
        request_hash,
        uuid.uuid4(),
        str(operation_type),
        amount_minor,
        currency,
        sender_id,
        recipient_id,
        operator_id,
        tags,
    )
    if row is None:
        # The key was claimed by a request that committed after this statement's snapshot was taken
        # (ON CONFLICT waited for it): read its record now.
        row = await conn.fetchrow(
            "SELECT false AS created, request_hash, response_status, response_body, created_at AS claimed_at,"
            " intent_id AS claimed_intent_id"
            " FROM pm.idempotency WHERE api_key_id = $1 AND idempotency_key = $2",
            api_key_id,
            idempotency_key,
        )
        assert row is not None, "a conflicting idempotency key has a row"
    if row["created"]:
        return CreateOutcome(created=intent_from_row(row), existing=None)
    body = row["response_body"]
    return CreateOutcome(
        created=None,
        existing=IdempotencyRecord(
            request_hash=bytes(row["request_hash"]),
            intent_id=row["claimed_intent_id"],
            response_status=row["response_status"],
            response_body=json.loads(body) if isinstance(body, str) else body,
            created_at=row["claimed_at"],
        ),
    )


_COMPLETE_SQL = """
UPDATE pm.idempotency i SET response_status = u.status, response_body = u.body, completed_at = now()
FROM unnest($1::text[], $2::text[], $3::int[], $4::jsonb[]) AS u(api_key_id, idempotency_key, status, body)
WHERE i.api_key_id = u.api_key_id AND i.idempotency_key = u.idempotency_key AND i.response_status IS NULL
"""


async def complete_idempotency(
    conn: asyncpg.Connection | asyncpg.Pool, responses: list[tuple[str, str, int, Any]]
) -> None:
    """Store the responses first requests got, for replays of the same keys: one statement for all.

    `responses` holds (api_key_id, idempotency_key, status, body); a key already completed keeps its
    first response."""
    if not responses:
        return
    await conn.execute(
        _COMPLETE_SQL,
        [r[0] for r in responses],
        [r[1] for r in responses],
        [r[2] for r in responses],
        [json.dumps(r[3]) for r in responses],
    )


# -- transitions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransitionResult:
    applied: bool  # False: the intent was not in the expected state (someone else moved it)
    intent: Intent  # after the transition when applied, else as it is now


_TRANSITION_SQL = f"""
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                         $7::jsonb[], $8::text[], $9::text[])
        AS u(id, expected, new_state, channel, fee_pre, fee_post, fee_rules, error_code, error_message)
), updated AS (
    UPDATE pm.intent i SET
        state = input.new_state,
        version = i.version + 1,
        channel = coalesce(input.channel, i.channel),
        fee_pre_minor = coalesce(input.fee_pre, i.fee_pre_minor),
        fee_post_minor = coalesce(input.fee_post, i.fee_post_minor),
        fee_rules = coalesce(input.fee_rules, i.fee_rules),
        error_code = input.error_code,
        error_message = input.error_message,
        updated_at = clock_timestamp()
    FROM input
    WHERE i.id = input.id AND i.state = input.expected
    RETURNING i.*
), events AS (
    INSERT INTO pm.intent_event (intent_id, version, state, error_code, error_message, created_at)
    SELECT id, version, state, error_code, error_message, updated_at FROM updated
)
SELECT true AS applied, {INTENT_COLUMNS} FROM updated
UNION ALL
SELECT false, {", ".join("i." + c for c in INTENT_COLUMNS.split(", "))}
FROM pm.intent i JOIN input ON input.id = i.id
WHERE NOT EXISTS (SELECT 1 FROM updated WHERE updated.id = i.id)
"""


async def apply_transitions(
    conn: asyncpg.Connection | asyncpg.Pool, transitions: list[Transition]
) -> list[TransitionResult]:
    """Compare-and-set every transition in one statement; one result per input intent."""
    if not transitions:
        return []
    ids = [t.intent_id for t in transitions]
    assert len(set(ids)) == len(ids), "one transition per intent per batch"
    rows = await conn.fetch(
        _TRANSITION_SQL,
        ids,
        [str(t.expected) for t in transitions],
        [str(t.new) for t in transitions],
        [t.channel for t in transitions],
        [t.fee_pre_minor for t in transitions],
        [t.fee_post_minor for t in transitions],
        [json.dumps(list(t.fee_rules)) if t.fee_rules is not None else None for t in transitions],
        [str(t.error_code) if t.error_code else None for t in transitions],
        [t.error_message for t in transitions],
    )
    results = [TransitionResult(applied=row["applied"], intent=intent_from_row(row)) for row in rows]
    expected_new = {t.intent_id: t.new for t in transitions}
    for result in results:
        # Pair the write with a read (TigerStyle): what was applied is what was asked.
        assert not result.applied or result.intent.state == expected_new[result.intent.id]
    return results


# -- reads ---------------------------------------------------------------------------------------


async def load_intent(conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID) -> Intent | None:
    row = await conn.fetchrow(f"SELECT {INTENT_COLUMNS} FROM pm.intent WHERE id = $1", intent_id)
    return intent_from_row(row) if row else None


async def load_intents(conn: asyncpg.Connection | asyncpg.Pool, ids: list[uuid.UUID]) -> list[Intent]:
    rows = await conn.fetch(f"SELECT {INTENT_COLUMNS} FROM pm.intent WHERE id = ANY($1::uuid[])", ids)
    return [intent_from_row(row) for row in rows]


@dataclass(frozen=True, slots=True)
class IntentEvent:
    intent_id: uuid.UUID
    version: int
    state: State
    error_code: str | None
    error_message: str | None
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["intent_id"] = str(self.intent_id)
        data["state"] = str(self.state)
        data["created_at"] = self.created_at.isoformat()
        return data


async def events_since(
    conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID, after_version: int
) -> list[IntentEvent]:
    rows = await conn.fetch(
        "SELECT intent_id, version, state, error_code, error_message, created_at FROM pm.intent_event"
        " WHERE intent_id = $1 AND version > $2 ORDER BY version",
        intent_id,
        after_version,
    )
    return [
        IntentEvent(
            r["intent_id"],
            r["version"],
            State(r["state"]),
            r["error_code"],
            r["error_message"],
            r["created_at"],
        )
        for r in rows
    ]


async def history_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    user_id: int,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """A user's history rows, newest first, strictly older than the `before` cursor."""
    assert 0 < limit <= HISTORY_PAGE_MAX
    if before is None:
        return await conn.fetch(
            "SELECT * FROM pm.history WHERE user_id = $1 ORDER BY created_at DESC, intent_id DESC LIMIT $2",
            user_id,
            limit,
        )
    return await conn.fetch(
        "SELECT * FROM pm.history WHERE user_id = $1 AND (created_at, intent_id) < ($2, $3)"
        " ORDER BY created_at DESC, intent_id DESC LIMIT $4",
        user_id,
        before[0],
        before[1],
        limit,
    )
