"""A past for the bench's fresh database: finished P2P intents (their event and history rows too) written
before the fleet starts, then VACUUM ANALYZE, so PostgreSQL plans the fleet's statements as it does on a
production database, which has history and statistics.

    await seed_history(database_url, intents=100_000, ledger_url=database_url)   # None: no ledger rows

Why it matters (measured, 2026-12-07): on an empty, never-analyzed database each pooled connection
caches the plans it makes in the warm-up, when pm.intent holds a few rows, and a hash join over a
sequential scan of pm.intent is then the cheapest way to update a batch by id. Nothing replans them
until autovacuum first analyzes the table (its first visit to a new database may take
`autovacuum_naptime`, 60 s, longer than a run), so every stage batch read every intent: 3,216
sequential scans reading 41 million rows in one 30 s run at 1,000 intents/s, two fifths of
PostgreSQL's CPU. A production database past its first minute is analyzed and keeps index plans.

The same holds for every table a stage joins a batch with: the idempotency records (the gateway's
statement), the `postgres` ledger's accounts and transfers (dispatch's and settlement's). So the seeded
intents have their idempotency records (within the 24 h retention, so the poller purges none during a
run) and, on the `postgres` ledger, their users' accounts (funded from the adjustments account through
transit, as `pm dev` funds) and one posted transfer each, sender to recipient, carrying its intent's id
as every PM transfer does: debits still equal credits, transit is back to zero and no user is
overdrawn, so the ledger check holds. Their balance snapshot rows are written named, as earlier
snapshots would have left them, so the poller's first snapshot in the run looks up no names.

The rows belong to no bench user (sender and recipient ids from HISTORY_USER_ID_BASE), are SETTLED
and `finished` (off every work list of the status poller), and their events are behind the outbox
feed's initial cursor (transaction id 0), so no process delivers them again.
"""

from __future__ import annotations

import asyncpg
import tigerbeetle as tb

from ledger import accounts
from ledger.open import open_ledger
from ledger.validate import BATCH_EVENTS_MAX
from pm.dev.ledger_demo import TRANSFER_CODE_ADJUSTMENT, TRANSFER_CODE_P2P

HISTORY_INTENTS_DEFAULT = 100_000
HISTORY_INTENTS_MAX = 1_000_000  # the ledger part holds its transfers in memory (~1 KiB each)
HISTORY_USER_ID_BASE = 900_000_000  # far from bench/mix.py's SENDER_ID_BASE and the recipients
HISTORY_USERS = 50_000
HISTORY_API_KEY_ID = "bench-history"  # no key has it: the rows came from no caller of this run
HISTORY_SPAN_S = 72_000  # the seeded intents were created over the 20 hours before the run
HISTORY_OPENING_BALANCE_MINOR = 10**12  # each history user's; far above what its payments take
HISTORY_CURRENCY = "THB"
SEED_TIMEOUT_S = 600.0

_STATES = ("CREATED", "VALIDATED", "PRICED", "CLEARED", "AUTHORIZED", "SETTLED")

_INTENTS_SQL = """
INSERT INTO pm.intent (id, state, version, operation_type, amount_minor, currency, sender_id, recipient_id,
                       channel, api_key_id, idempotency_key, finished, created_at, updated_at)
SELECT gen_random_uuid(), 'SETTLED', $2::int, 'P2P_TRANSFER', 100 + g % 10000, 'THB',
       $3::bigint + g % $4::bigint, $3::bigint + (g + 1) % $4::bigint, 'INTERNAL_P2P', $5::text, 'history-' || g,
       true, t, t
FROM generate_series(1, $1::int) AS g,
     LATERAL (SELECT now() - make_interval(secs => $6::float8 * ($1::int - g) / $1::int + 60)) AS at(t)
"""
_IDEMPOTENCY_SQL = """
INSERT INTO pm.idempotency (api_key_id, user_id, idempotency_key, request_hash, intent_id, response_status,
                            response_body, created_at)
SELECT i.api_key_id, i.sender_id, i.idempotency_key, sha256(i.idempotency_key::bytea), i.id, 202,
       jsonb_build_object('id', i.id), i.created_at
FROM pm.intent i
WHERE i.api_key_id = $1
"""
# The history users' rows of the balance snapshot, named (as earlier snapshots would have left them), so
# the poller's first snapshot of the run looks up no names (one ledger request per unnamed account).
_SNAPSHOT_NAMES_SQL = """
INSERT INTO pm.account_balance_snapshot (account_id, ledger, currency, code, kind, name, user_id, debits_pending,
                                         debits_posted, credits_pending, credits_posted, ledger_timestamp, taken_at)
SELECT u.account_id, $4, $3, $5, 'user', 'user:' || u.user_id || ':' || $3, u.user_id, 0, 0, 0, 0, 0, now()
FROM unnest($1::numeric[], $2::bigint[]) AS u(account_id, user_id)
"""
_PAYMENTS_SQL = (
    "SELECT id, sender_id, recipient_id, amount_minor FROM pm.intent WHERE api_key_id = $1 ORDER BY created_at"
)
_EVENTS_SQL = """
INSERT INTO pm.intent_event (intent_id, version, state, created_at, xid)
SELECT i.id, s.version, s.state, i.created_at, '0'
FROM pm.intent i, unnest($2::text[]) WITH ORDINALITY AS s(state, version)
WHERE i.api_key_id = $1
"""
_HISTORY_SQL = """
INSERT INTO pm.history (user_id, intent_id, direction, counterparty_id, operation_type, amount_minor,
                        fee_minor, currency, state, created_at, finished_at)
SELECT party.user_id, i.id, party.direction, party.counterparty_id, i.operation_type, i.amount_minor, 0,
       i.currency, i.state, i.created_at, i.updated_at
FROM pm.intent i, LATERAL (VALUES (i.sender_id, 'DEBIT', i.recipient_id),
                                  (i.recipient_id, 'CREDIT', i.sender_id)) AS party(user_id, direction, counterparty_id)
WHERE i.api_key_id = $1
"""


async def seed_history(database_url: str, intents: int, ledger_url: str | None) -> None:
    """Write `intents` finished P2P intents with their six events, two history rows and idempotency
    record each, in one transaction; on `ledger_url` (the `postgres` ledger on this database, or None)
    their ledger accounts and transfers; then VACUUM ANALYZE the database (statistics and the visibility
    map, as autovacuum leaves a production one)."""
    assert 0 <= intents <= HISTORY_INTENTS_MAX, intents
    connection = await asyncpg.connect(database_url, timeout=10, command_timeout=SEED_TIMEOUT_S)
    try:
        if intents:
            users = min(HISTORY_USERS, max(2, intents))
            async with connection.transaction():
                await connection.execute(
                    _INTENTS_SQL, intents, len(_STATES), HISTORY_USER_ID_BASE, users, HISTORY_API_KEY_ID,
                    float(HISTORY_SPAN_S),
                )  # fmt: skip
                await connection.execute(_EVENTS_SQL, HISTORY_API_KEY_ID, list(_STATES))
                await connection.execute(_HISTORY_SQL, HISTORY_API_KEY_ID)
                await connection.execute(_IDEMPOTENCY_SQL, HISTORY_API_KEY_ID)
            if ledger_url is not None:
                await _seed_ledger(connection, ledger_url, [HISTORY_USER_ID_BASE + n for n in range(users)])
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close(timeout=10)


async def _seed_ledger(connection: asyncpg.Connection, ledger_url: str, user_ids: list[int]) -> None:
    """The history users' accounts, funded, one posted transfer per seeded intent, and the users' named
    snapshot rows; every ledger request must be applied in full (a refusal is a bug of this seed, not a
    figure)."""
    currency = HISTORY_CURRENCY
    payments = await connection.fetch(_PAYMENTS_SQL, HISTORY_API_KEY_ID)
    named = [accounts.user(u, currency) for u in user_ids]
    system = [accounts.adjustments(currency), accounts.transit(currency)]
    ledger_id = accounts.currency_ledger(currency)
    adjustments, transit = (account.id for account in system)
    funding: list[tb.Transfer] = []
    for user_id, account in zip(user_ids, named, strict=True):
        funding += [
            _transfer(f"history-fund:{user_id}:in", adjustments, transit, HISTORY_OPENING_BALANCE_MINOR,
                      TRANSFER_CODE_ADJUSTMENT, ledger_id, flags=tb.TransferFlags.LINKED),
            _transfer(f"history-fund:{user_id}:out", transit, account.id, HISTORY_OPENING_BALANCE_MINOR,
                      TRANSFER_CODE_ADJUSTMENT, ledger_id),
        ]  # fmt: skip
    paid = [
        tb.Transfer(
            id=accounts.transfer_id(row["id"], "history"),
            debit_account_id=accounts.user(row["sender_id"], currency).id,
            credit_account_id=accounts.user(row["recipient_id"], currency).id,
            amount=row["amount_minor"],
            ledger=ledger_id,
            code=TRANSFER_CODE_P2P,
            user_data_128=row["id"].int,  # as every PM transfer: its intent
        )
        for row in payments
    ]
    async with open_ledger(ledger_url) as ledger:
        for start in range(0, len(system) + len(named), BATCH_EVENTS_MAX):
            batch = [a.to_tigerbeetle() for a in (system + named)[start : start + BATCH_EVENTS_MAX]]
            results = await ledger.create_accounts(batch)
            refused = [
                r for r in results if r.status not in (tb.CreateAccountStatus.CREATED, tb.CreateAccountStatus.EXISTS)
            ]
            assert not refused, refused[:3]
        # Chains of two never straddle a request: BATCH_EVENTS_MAX is odd, so step by one less.
        step = BATCH_EVENTS_MAX - 1
        for transfers in (funding, paid):
            for start in range(0, len(transfers), step):
                results = await ledger.create_transfers(transfers[start : start + step])
                refused = [r for r in results if r.status != tb.CreateTransferStatus.CREATED]
                assert not refused, refused[:3]
    await connection.execute(
        _SNAPSHOT_NAMES_SQL, [account.id for account in named], user_ids, currency, ledger_id,
        int(accounts.AccountKind.USER),
    )  # fmt: skip


def _transfer(
    name: str, debit: int, credit: int, amount: int, code: int, ledger_id: int, **fields: object
) -> tb.Transfer:
    return tb.Transfer(
        id=accounts.uuid5_int(f"transfer:{name}"), debit_account_id=debit, credit_account_id=credit,
        amount=amount, ledger=ledger_id, code=code, **fields,
    )  # fmt: skip
