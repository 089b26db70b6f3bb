"""Intents in PostgreSQL: create, compare-and-set transitions, reads. One SQL statement per batch.

Every function takes an asyncpg connection (or pool) and does one round trip for a whole batch:
the gateway creates the intents of concurrent requests in one statement, a stage applies a batch of
transitions in one statement.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from pm.config.constants import HISTORY_PAGE_MAX
from pm.domain.ids import uuid5_int
from pm.domain.intent import (
    OPERATION_NAMED,
    REFUNDABLE_OPERATIONS,
    STATE_NAMED,
    ErrorCode,
    Intent,
    OperationType,
    State,
    Transition,
)

INTENT_COLUMNS = (
    "id, state, version, operation_type, amount_minor, currency, sender_id, recipient_id, channel, "
    "fee_pre_minor, fee_post_minor, tags, operator_id, error_code, error_message, created_at, updated_at, "
    "fee_rules, merchant_id, destination_ref, refund_of, max_fee_pre_minor, max_fee_post_minor"
)


def intent_from_row(row: asyncpg.Record) -> Intent:
    fee_rules = row["fee_rules"]
    if isinstance(fee_rules, str):
        fee_rules = orjson.loads(fee_rules)
    return Intent(
        id=row["id"],
        state=STATE_NAMED[row["state"]],
        version=row["version"],
        operation_type=OPERATION_NAMED[row["operation_type"]],
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
        merchant_id=row["merchant_id"],
        destination_ref=row["destination_ref"],
        refund_of=row.get("refund_of"),
        max_fee_pre_minor=row["max_fee_pre_minor"],
        max_fee_post_minor=row["max_fee_post_minor"],
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
    """Either the intent was created now, or the key was taken before (`existing` says by what), or the
    request's nonce was used before (`nonce_used`: a replayed request; nothing was written)."""

    created: Intent | None
    existing: IdempotencyRecord | None
    nonce_used: bool = False


# A missing X-User-Id scopes its Idempotency-Keys as a user of its own (user ids are positive).
NO_USER_ID = 0


@dataclass(frozen=True, slots=True)
class NewIntent:
    """What a caller asked to create, under its Idempotency-Key (validated before it gets here).

    `user_id` is the signed X-User-Id (None: none sent): an Idempotency-Key is the caller's per user, so
    one Auth Center key serves every user without their keys colliding. `nonce` is the signed request's
    X-PM-Nonce, claimed for good in the same statement (None: not a signed request, e.g. a test's)."""

    api_key_id: str
    idempotency_key: str
    request_hash: bytes
    operation_type: OperationType
    amount_minor: int
    currency: str
    sender_id: int | None
    recipient_id: int | None
    operator_id: int | None
    tags: tuple[str, ...] = ()
    merchant_id: int | None = None
    destination_ref: str | None = None
    user_id: int | None = None
    nonce: str | None = None
    refund_of: uuid.UUID | None = None  # REFUND: the original (create_refund reserves its amount)
    max_fee_pre_minor: int | None = None  # the fees the caller agreed to (None: no bound)
    max_fee_post_minor: int | None = None

    def __post_init__(self) -> None:
        assert self.amount_minor > 0
        assert self.max_fee_pre_minor is None or self.max_fee_pre_minor >= 0
        assert self.max_fee_post_minor is None or self.max_fee_post_minor >= 0
        assert self.user_id is None or self.user_id > 0

    @property
    def scope(self) -> tuple[str, int, str]:
        """What an Idempotency-Key is unique on: (API key, X-User-Id, Idempotency-Key)."""
        return (self.api_key_id, self.user_id or NO_USER_ID, self.idempotency_key)


CREATE_BATCH_MAX = 512

_NO_INTENT = ", ".join(["NULL"] * len(INTENT_COLUMNS.split(", ")))

# Claims every request's nonce (pm.request_nonce, kept past the signature's clock window: a replay is
# refused even after Redis lost everything), then, for each request whose nonce was new, its key; inserts
# an intent (CREATED, version 1) and its first event for each key claimed now, and answers the
# idempotency record for each key claimed before and `nonce_used` for each nonce seen before (nothing
# else is written for those). `request_id` (the id the intent gets if created) ties every output row to
# its input row. Nonces and keys are claimed in order, so two gateways' batches that share some wait on
# each other in one order.
_CREATE_SQL = f"""
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::uuid[], $5::text[], $6::bigint[],
                         $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::jsonb[], $12::bigint[],
                         $13::text[], $14::bigint[], $15::text[], $16::uuid[], $17::bigint[], $18::bigint[])
        AS u(api_key_id, idempotency_key, request_hash, id, operation_type, amount_minor, currency,
             sender_id, recipient_id, operator_id, tags, merchant_id, destination_ref, user_id, nonce, refund_of,
             max_fee_pre_minor, max_fee_post_minor)
), nonce AS (
    INSERT INTO pm.request_nonce (api_key_id, nonce)
    SELECT api_key_id, nonce FROM input WHERE nonce IS NOT NULL ORDER BY api_key_id, nonce
    ON CONFLICT DO NOTHING
    RETURNING api_key_id, nonce
), fresh AS (
    SELECT input.* FROM input
    WHERE input.nonce IS NULL
       OR EXISTS (SELECT 1 FROM nonce WHERE nonce.api_key_id = input.api_key_id AND nonce.nonce = input.nonce)
), claim AS (
    INSERT INTO pm.idempotency (api_key_id, user_id, idempotency_key, request_hash, intent_id)
    SELECT api_key_id, user_id, idempotency_key, request_hash, id FROM fresh
    ORDER BY api_key_id, user_id, idempotency_key
    ON CONFLICT DO NOTHING
    RETURNING intent_id
), created AS (
    INSERT INTO pm.intent (id, state, version, operation_type, amount_minor, currency, sender_id,
                           recipient_id, operator_id, tags, api_key_id, idempotency_key, merchant_id, destination_ref,
                           refund_of, max_fee_pre_minor, max_fee_post_minor)
    SELECT fresh.id, 'CREATED', 1, fresh.operation_type, fresh.amount_minor, fresh.currency, fresh.sender_id,
           fresh.recipient_id, fresh.operator_id,
           ARRAY(SELECT jsonb_array_elements_text(fresh.tags)), fresh.api_key_id, fresh.idempotency_key,
           fresh.merchant_id, fresh.destination_ref, fresh.refund_of, fresh.max_fee_pre_minor,
           fresh.max_fee_post_minor
    FROM fresh JOIN claim ON claim.intent_id = fresh.id
    RETURNING {INTENT_COLUMNS}
), event AS (
    INSERT INTO pm.intent_event (intent_id, version, state, created_at)
    SELECT id, version, state, created_at FROM created
)
SELECT c.id AS request_id, 'created' AS outcome, c.*, NULL::bytea AS request_hash, NULL::int AS response_status,
       NULL::jsonb AS response_body, NULL::timestamptz AS claimed_at, NULL::uuid AS claimed_intent_id
FROM created c
UNION ALL
SELECT fresh.id, 'existing', {_NO_INTENT}, i.request_hash, i.response_status, i.response_body, i.created_at,
       i.intent_id
FROM fresh JOIN pm.idempotency i USING (api_key_id, user_id, idempotency_key)
WHERE NOT EXISTS (SELECT 1 FROM claim WHERE claim.intent_id = fresh.id)
UNION ALL
SELECT input.id, 'nonce_used', {_NO_INTENT}, NULL, NULL, NULL, NULL, NULL
FROM input WHERE NOT EXISTS (SELECT 1 FROM fresh WHERE fresh.id = input.id)
"""

# Keys claimed by transactions that committed after the statement above took its snapshot (its
# ON CONFLICT waited for them, its join could not see them): read now.
_CLAIMED_SQL = """
SELECT u.n, 'existing' AS outcome, i.request_hash, i.response_status, i.response_body, i.created_at AS claimed_at,
       i.intent_id AS claimed_intent_id
FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY AS u(api_key_id, user_id, idempotency_key, n)
JOIN pm.idempotency i USING (api_key_id, user_id, idempotency_key)
"""

_NONCE_USED = CreateOutcome(created=None, existing=None, nonce_used=True)


def _outcome(row: asyncpg.Record) -> CreateOutcome:
    if row["outcome"] == "created":
        return CreateOutcome(created=intent_from_row(row), existing=None)
    if row["outcome"] == "nonce_used":
        return _NONCE_USED
    assert row["outcome"] == "existing", row["outcome"]
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


async def create_intents(conn: asyncpg.Connection | asyncpg.Pool, requests: list[NewIntent]) -> list[CreateOutcome]:
    """Claim each request's nonce and idempotency key and insert its intent, in one statement for the batch;
    one outcome per request, in order.

    A nonce sent twice in one batch is a replay: the first claims it, the others are `nonce_used` at once
    (a flood of replays costs no statement of its own). A key asked for twice (with different nonces) is
    claimed by the first; the others go to a next statement and see that claim, in flight, exactly as if
    they had come a moment later."""
    assert 0 < len(requests) <= CREATE_BATCH_MAX
    outcomes: list[CreateOutcome | None] = [None] * len(requests)
    first_of_nonce: dict[tuple[str, str], int] = {}
    waiting: list[int] = []
    for index, request in enumerate(requests):
        if request.nonce is not None:
            if (request.api_key_id, request.nonce) in first_of_nonce:
                outcomes[index] = _NONCE_USED
                continue
            first_of_nonce[(request.api_key_id, request.nonce)] = index
        waiting.append(index)
    # Bounded: every round settles at least its first request.
    while waiting:
        this_round: list[int] = []
        later: list[int] = []
        scopes: set[tuple[str, int, str]] = set()
        for index in waiting:
            scope = requests[index].scope
            (later if scope in scopes else this_round).append(index)
            scopes.add(scope)
        round_outcomes = await _create_round(conn, [requests[index] for index in this_round])
        for index, outcome in zip(this_round, round_outcomes, strict=True):
            outcomes[index] = outcome
        waiting = later
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


async def _create_round(conn: asyncpg.Connection | asyncpg.Pool, unique: list[NewIntent]) -> list[CreateOutcome]:
    """One statement for requests with distinct nonces and distinct idempotency scopes."""
    assert len({r.scope for r in unique}) == len(unique)
    ids = [uuid.uuid4() for _ in unique]
    rows = await conn.fetch(
        _CREATE_SQL,
        [r.api_key_id for r in unique],
        [r.idempotency_key for r in unique],
        [r.request_hash for r in unique],
        ids,
        [str(r.operation_type) for r in unique],
        [r.amount_minor for r in unique],
        [r.currency for r in unique],
        [r.sender_id for r in unique],
        [r.recipient_id for r in unique],
        [r.operator_id for r in unique],
        [orjson.dumps(r.tags).decode() for r in unique],
        [r.merchant_id for r in unique],
        [r.destination_ref for r in unique],
        [r.user_id or NO_USER_ID for r in unique],
        [r.nonce for r in unique],
        [r.refund_of for r in unique],
        [r.max_fee_pre_minor for r in unique],
        [r.max_fee_post_minor for r in unique],
    )
    by_id = {row["request_id"]: _outcome(row) for row in rows}
    missing = [index for index, intent_id in enumerate(ids) if intent_id not in by_id]
    if missing:
        claimed = await conn.fetch(
            _CLAIMED_SQL,
            [unique[i].api_key_id for i in missing],
            [unique[i].user_id or NO_USER_ID for i in missing],
            [unique[i].idempotency_key for i in missing],
        )
        for row in claimed:
            by_id[ids[missing[row["n"] - 1]]] = _outcome(row)
    assert len(by_id) == len(unique), "every claimed key has an idempotency row"
    return [by_id[intent_id] for intent_id in ids]


async def create_intent(conn: asyncpg.Connection | asyncpg.Pool, **fields: Any) -> CreateOutcome:
    """`create_intents` for one request: `NewIntent`'s fields as keywords."""
    fields["tags"] = tuple(fields.get("tags", ()))
    (outcome,) = await create_intents(conn, [NewIntent(**fields)])
    return outcome


# -- refunds (sql/0019) ----------------------------------------------------------------------------

# Reserves a refund's amount on its original, in the refund's creating transaction: the row lock makes
# concurrent refunds of one intent wait on each other, and each re-checks the condition on the row as the
# one before left it (READ COMMITTED), so their sum never passes the original's amount.
_RESERVE_REFUND_SQL = """
UPDATE pm.intent SET refunded_minor = refunded_minor + $2
WHERE id = $1 AND state = 'SETTLED' AND operation_type = ANY($3::text[]) AND refunded_minor + $2 <= amount_minor
RETURNING refunded_minor
"""
_REFUNDABLE_SQL = "SELECT state, operation_type, amount_minor, refunded_minor FROM pm.intent WHERE id = $1"


class RefundRefusal(Exception):
    """The original cannot take this refund now: `code` is NOT_REFUNDABLE or REFUND_EXCEEDS_ORIGINAL."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def create_refund(pool: asyncpg.Pool, request: NewIntent) -> CreateOutcome:
    """`create_intents` for one REFUND, with its amount reserved on the original in the same transaction,
    or RefundRefusal with nothing written (but the request's nonce, claimed alone: a refused request
    cannot be replayed into a refund once room frees up). A replay of a created refund (same
    Idempotency-Key) answers as `create_intents` does and reserves nothing again."""
    assert request.operation_type == OperationType.REFUND and request.refund_of is not None
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            (outcome,) = await create_intents(conn, [request])
            refusal = None if outcome.created is None else await _reserve_refund(conn, request)
        except BaseException:
            await transaction.rollback()
            raise
        if refusal is None:
            await transaction.commit()
            return outcome
        await transaction.rollback()
    if request.nonce is not None:
        await claim_nonces(pool, [(request.api_key_id, request.nonce)])
    raise refusal


async def _reserve_refund(conn: asyncpg.Connection, request: NewIntent) -> RefundRefusal | None:
    """Reserve the refund's amount on its original; None when done, else why not (to roll back)."""
    refundable = sorted(str(operation) for operation in REFUNDABLE_OPERATIONS)
    reserved = await conn.fetchval(_RESERVE_REFUND_SQL, request.refund_of, request.amount_minor, refundable)
    if reserved is not None:
        return None
    row = await conn.fetchrow(_REFUNDABLE_SQL, request.refund_of)
    if row is None or row["state"] != "SETTLED" or row["operation_type"] not in refundable:
        return RefundRefusal(ErrorCode.NOT_REFUNDABLE, "only a SETTLED P2P_TRANSFER or MINIAPP_CHARGE is refunded")
    left_minor = row["amount_minor"] - row["refunded_minor"]
    message = f"the refunds of this intent would pass its amount: {left_minor} minor units are left to refund"
    return RefundRefusal(ErrorCode.REFUND_EXCEEDS_ORIGINAL, message)


_CLAIM_NONCES_SQL = """
INSERT INTO pm.request_nonce (api_key_id, nonce)
SELECT * FROM unnest($1::text[], $2::text[]) ORDER BY 1, 2
ON CONFLICT DO NOTHING
RETURNING api_key_id, nonce
"""


async def claim_nonces(conn: asyncpg.Connection | asyncpg.Pool, nonces: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Claim (api_key_id, nonce) pairs for good, in one statement; the pairs that were new."""
    assert len(set(nonces)) == len(nonces), "one claim per nonce per statement"
    if not nonces:
        return set()
    rows = await conn.fetch(_CLAIM_NONCES_SQL, [n[0] for n in nonces], [n[1] for n in nonces])
    return {(row["api_key_id"], row["nonce"]) for row in rows}


# -- transitions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransitionResult:
    applied: bool  # False: the intent was not in the expected state (someone else moved it)
    intent: Intent  # after the transition when applied, else as it is now


_TRANSITION_SQL_TEMPLATE = """
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
), outbox AS (
    -- A mini-app intent's final state goes to its merchant's backend (the outbox worker signs and
    -- delivers it), written in this statement so no committed change can miss its webhook.
    INSERT INTO pm.outbox (event_id, kind, intent_id, version, merchant_id, payload)
    SELECT gen_random_uuid(), 'merchant_webhook', id, version, merchant_id,
           jsonb_build_object('type', 'intent.' || lower(state), 'intent_id', id, 'version', version,
                              'state', state, 'operation_type', operation_type, 'amount_minor', amount_minor,
                              'currency', currency, 'merchant_id', merchant_id, 'user_id',
                              coalesce(sender_id, recipient_id), 'fee_pre_minor', fee_pre_minor,
                              'fee_post_minor', fee_post_minor, 'error_code', error_code,
                              'occurred_at', updated_at)
    FROM updated
    WHERE merchant_id IS NOT NULL AND state IN ('SETTLED', 'REJECTED', 'FAILED')
)
SELECT {returning} FROM updated
"""
_TRANSITION_SQL = _TRANSITION_SQL_TEMPLATE.format(returning=INTENT_COLUMNS)
# When the caller has the intents as it read them: only what the row cannot tell from them. A stage
# batch's rows are then not sent back whole (measured: a fifth less client CPU and PostgreSQL CPU per
# transition row, bench/ and /tmp experiments in the README's figures).
_TRANSITION_SQL_AFTER_READ = _TRANSITION_SQL_TEMPLATE.format(returning="id, version, updated_at")


async def apply_transitions(
    conn: asyncpg.Connection | asyncpg.Pool,
    transitions: list[Transition],
    read: dict[uuid.UUID, Intent] | None = None,
) -> list[TransitionResult]:
    """Compare-and-set every transition in one statement; one result per input intent (that exists).

    `read`: the intents as the caller read them (a stage: its batch's entries), by id. An applied row whose
    new version is the read one's plus one was exactly that intent before this transition, so the intent
    after it is built from the read one and the transition (`after_transition`) instead of sent back
    whole; any other applied row (an out-of-date read) is loaded, as are the rows not applied."""
    if not transitions:
        return []
    ids = [t.intent_id for t in transitions]
    assert len(set(ids)) == len(ids), "one transition per intent per batch"
    by_read = read is not None and all(intent_id in read for intent_id in ids)
    rows = await conn.fetch(
        _TRANSITION_SQL_AFTER_READ if by_read else _TRANSITION_SQL,
        ids,
        [str(t.expected) for t in transitions],
        [str(t.new) for t in transitions],
        [t.channel for t in transitions],
        [t.fee_pre_minor for t in transitions],
        [t.fee_post_minor for t in transitions],
        [orjson.dumps(t.fee_rules).decode() if t.fee_rules is not None else None for t in transitions],
        [str(t.error_code) if t.error_code else None for t in transitions],
        [t.error_message for t in transitions],
    )
    if by_read:
        assert read is not None
        results, to_load = _results_after_read(rows, read, {t.intent_id: t for t in transitions})
    else:
        results, to_load = [TransitionResult(applied=True, intent=intent_from_row(row)) for row in rows], []
    applied = {row["id"] for row in rows}
    if to_load or len(applied) < len(ids):
        # Not in the expected state (a redelivery, or another consumer was first): as they are now. Rare,
        # so a second round trip then, rather than a lookup of every row in every batch.
        loaded = await load_intents(conn, to_load + [intent_id for intent_id in ids if intent_id not in applied])
        results += [TransitionResult(applied=intent.id in applied, intent=intent) for intent in loaded]
    expected_new = {t.intent_id: t.new for t in transitions}
    for result in results:
        # Pair the write with a read (TigerStyle): what was applied is what was asked.
        assert not result.applied or result.intent.state == expected_new[result.intent.id]
    return results


def _results_after_read(
    rows: list[asyncpg.Record], read: dict[uuid.UUID, Intent], transitions: dict[uuid.UUID, Transition]
) -> tuple[list[TransitionResult], list[uuid.UUID]]:
    """The applied rows' intents built from the read ones; and the ids whose read was out of date."""
    results, out_of_date = [], []
    for row in rows:
        before, transition = read[row["id"]], transitions[row["id"]]
        if row["version"] == before.version + 1 and before.state == transition.expected:
            intent = after_transition(before, transition, row["version"], row["updated_at"])
            results.append(TransitionResult(applied=True, intent=intent))
        else:
            out_of_date.append(before.id)
    return results, out_of_date


def after_transition(before: Intent, transition: Transition, version: int, updated_at: datetime) -> Intent:
    """`before` as the transition statement leaves its row (the SET list of _TRANSITION_SQL_TEMPLATE).
    The columns it does not set are written once, when the intent is created; `psp_status` is not a
    column (a callback's entry carries it to settlement), so, as in a loaded row, it is None."""
    assert before.id == transition.intent_id and before.state == transition.expected
    return replace(
        before,
        state=transition.new,
        version=version,
        channel=transition.channel if transition.channel is not None else before.channel,
        fee_pre_minor=transition.fee_pre_minor if transition.fee_pre_minor is not None else before.fee_pre_minor,
        fee_post_minor=transition.fee_post_minor if transition.fee_post_minor is not None else before.fee_post_minor,
        fee_rules=transition.fee_rules if transition.fee_rules is not None else before.fee_rules,
        error_code=str(transition.error_code) if transition.error_code else None,
        error_message=transition.error_message,
        updated_at=updated_at,
        psp_status=None,
    )


# -- reads ---------------------------------------------------------------------------------------


async def load_intent(conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID) -> Intent | None:
    row = await conn.fetchrow(f"SELECT {INTENT_COLUMNS} FROM pm.intent WHERE id = $1", intent_id)
    return intent_from_row(row) if row else None


async def load_intents(conn: asyncpg.Connection | asyncpg.Pool, ids: list[uuid.UUID]) -> list[Intent]:
    rows = await conn.fetch(f"SELECT {INTENT_COLUMNS} FROM pm.intent WHERE id = ANY($1::uuid[])", ids)
    return [intent_from_row(row) for row in rows]


# Status messages' event ids: derived from (intent, version), so a re-sent message has the same one.
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "onewallet-pm:intent-event")
_EVENT_ID_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def event_id_text(intent_id_text: str, version: int) -> str:
    """`str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{intent_id}:{version}"))`, without UUID objects: the outbox
    worker derives one per status message."""
    h = f"{uuid5_int(f'{intent_id_text}:{version}', _EVENT_ID_NAMESPACE_BYTES):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_id(intent_id: uuid.UUID, version: int) -> uuid.UUID:
    return uuid.UUID(event_id_text(str(intent_id), version))


def event_message(
    intent_id_text: str, version: int, state: str, error_code: str | None, error_message: str | None, created_at: Any
) -> dict[str, Any]:
    """A transition as the app hears it (pub/sub `intent.{id}`, SSE): a receiver drops an `event_id` it has
    seen and orders by `version`. `created_at` is a datetime (orjson writes it as isoformat does) or text."""
    return {
        "event_id": event_id_text(intent_id_text, version),
        "intent_id": intent_id_text,
        "version": version,
        "state": state,
        "error_code": error_code,
        "error_message": error_message,
        "created_at": created_at,
    }


@dataclass(frozen=True, slots=True)
class IntentEvent:
    """One transition, as SSE replays it (the outbox worker publishes the same `event_message`)."""

    intent_id: uuid.UUID
    version: int
    state: State
    error_code: str | None
    error_message: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> IntentEvent:
        return cls(
            row["intent_id"], row["version"], STATE_NAMED[row["state"]], row["error_code"], row["error_message"],
            row["created_at"],
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return event_message(
            str(self.intent_id), self.version, str(self.state), self.error_code, self.error_message,
            self.created_at.isoformat(),
        )  # fmt: skip


async def events_since(
    conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID, after_version: int
) -> list[IntentEvent]:
    rows = await conn.fetch(
        "SELECT intent_id, version, state, error_code, error_message, created_at FROM pm.intent_event"
        " WHERE intent_id = $1 AND version > $2 ORDER BY version",
        intent_id,
        after_version,
    )
    return [IntentEvent.from_row(r) for r in rows]


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
