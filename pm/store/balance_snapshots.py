"""Balance snapshots (`pm.account_balance_snapshot`, sql/0016): each ledger account's balances as the status
poller last read them, for reporting without touching the ledger (consumers/balance_snapshot.py takes
them; GET /admin/balances and `pm balances snapshot` read them).

    await write_page(conn, rows)                       # one upsert statement for one page of accounts
    names = await stored_accounts(conn, account_ids)   # what a page's accounts already have stored
    rows = await snapshot_page(conn, kind, after_account_id, limit)   # keyset page by account id

Each call is one short statement in its own transaction: a snapshot never holds a lock between pages, and
the only table it writes is its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# The snapshot's `kind` of an account: its ledger.accounts.AccountKind, lower case (consumers/balance_snapshot.py
# maps them; a test keeps the two lists equal), or `unknown` for a code PM does not define.
ACCOUNT_KINDS = ("user", "transit", "fees", "psp_clearing", "merchant", "adjustments", "unknown")
# The most rows one read returns (GET /admin/balances pages read one row more than they show).
SNAPSHOT_PAGE_ROWS_MAX = 10_001
ACCOUNT_ID_MAX = (1 << 128) - 1


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """One account as read from the ledger, with what PM knows of it (its name, user, merchant)."""

    account_id: int
    ledger: int
    currency: str | None
    code: int
    kind: str
    name: str | None
    user_id: int | None
    merchant_id: int | None
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    ledger_timestamp: int


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """What a snapshot row already holds of an account: its name (None: not yet known) and counters."""

    name: str | None
    counters: tuple[int, int, int, int]  # debits_pending, debits_posted, credits_pending, credits_posted


# One statement per page (unnest of one array per column). A name once known is kept: a later page that
# could not name the account (COALESCE) does not forget it. Everything else is what the ledger said now,
# so a snapshot of a ledger that has not moved changes only taken_at.
_WRITE_PAGE_SQL = """
INSERT INTO pm.account_balance_snapshot AS s (
    account_id, ledger, currency, code, kind, name, user_id, merchant_id,
    debits_pending, debits_posted, credits_pending, credits_posted, ledger_timestamp, taken_at
)
SELECT u.*, clock_timestamp()
FROM unnest(
    $1::numeric[], $2::bigint[], $3::text[], $4::integer[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
    $9::numeric[], $10::numeric[], $11::numeric[], $12::numeric[], $13::bigint[]
) AS u
ON CONFLICT (account_id) DO UPDATE SET
    ledger = EXCLUDED.ledger,
    currency = EXCLUDED.currency,
    code = EXCLUDED.code,
    kind = EXCLUDED.kind,
    name = COALESCE(EXCLUDED.name, s.name),
    user_id = COALESCE(EXCLUDED.user_id, s.user_id),
    merchant_id = COALESCE(EXCLUDED.merchant_id, s.merchant_id),
    debits_pending = EXCLUDED.debits_pending,
    debits_posted = EXCLUDED.debits_posted,
    credits_pending = EXCLUDED.credits_pending,
    credits_posted = EXCLUDED.credits_posted,
    ledger_timestamp = EXCLUDED.ledger_timestamp,
    taken_at = EXCLUDED.taken_at
-- Two takers of one page (two pollers, or `pm balances snapshot --take` beside one): the one that read
-- the ledger later wins, whichever writes last, so older balances never replace newer ones.
WHERE s.ledger_timestamp <= EXCLUDED.ledger_timestamp
"""

_COLUMNS = (
    "account_id, ledger, currency, code, kind, name, user_id, merchant_id, debits_pending, debits_posted,"
    " credits_pending, credits_posted, posted_minor, pending_minor, available_minor, ledger_timestamp, taken_at"
)
# Keyset pages by account id, of one kind (the index account_balance_snapshot_kind) or of all (the key).
_PAGE_OF_KIND_SQL = (
    f"SELECT {_COLUMNS} FROM pm.account_balance_snapshot WHERE kind = $1 AND account_id > $2"
    " ORDER BY account_id LIMIT $3"
)
_PAGE_SQL = f"SELECT {_COLUMNS} FROM pm.account_balance_snapshot WHERE account_id > $1 ORDER BY account_id LIMIT $2"


async def write_page(conn: asyncpg.Connection | asyncpg.Pool, rows: list[SnapshotRow]) -> None:
    """Upsert one page of accounts in one statement (its own short transaction)."""
    if not rows:
        return
    assert len({row.account_id for row in rows}) == len(rows), "an account appears once per page"
    columns = (
        "account_id", "ledger", "currency", "code", "kind", "name", "user_id", "merchant_id",
        "debits_pending", "debits_posted", "credits_pending", "credits_posted", "ledger_timestamp",
    )  # fmt: skip
    await conn.execute(_WRITE_PAGE_SQL, *([getattr(row, column) for row in rows] for column in columns))


async def stored_accounts(conn: asyncpg.Connection | asyncpg.Pool, account_ids: list[int]) -> dict[int, StoredAccount]:
    """The stored name and counters of each of `account_ids` that has a row."""
    rows = await conn.fetch(
        "SELECT account_id, name, debits_pending, debits_posted, credits_pending, credits_posted"
        " FROM pm.account_balance_snapshot WHERE account_id = ANY($1::numeric[])",
        account_ids,
    )
    return {
        int(row["account_id"]): StoredAccount(
            row["name"],
            (
                int(row["debits_pending"]),
                int(row["debits_posted"]),
                int(row["credits_pending"]),
                int(row["credits_posted"]),
            ),
        )
        for row in rows
    }


async def snapshot_page(
    conn: asyncpg.Connection | asyncpg.Pool, kind: str | None, after_account_id: int, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` rows after `after_account_id` (0: from the first), by account id; `kind` None: all."""
    assert 0 < limit <= SNAPSHOT_PAGE_ROWS_MAX, limit
    assert 0 <= after_account_id <= ACCOUNT_ID_MAX, after_account_id
    if kind is None:
        rows = await conn.fetch(_PAGE_SQL, after_account_id, limit)
    else:
        rows = await conn.fetch(_PAGE_OF_KIND_SQL, kind, after_account_id, limit)
    return [row_json(row) for row in rows]


def row_json(row: asyncpg.Record) -> dict[str, Any]:
    """A row as JSON: amounts as integers (minor units), the 128-bit account id as decimal text (beyond
    what a JSON number carries exactly in most readers), the ledger timestamp in nanoseconds."""
    item = dict(row)
    item["account_id"] = str(int(row["account_id"]))
    for column in (
        "debits_pending", "debits_posted", "credits_pending", "credits_posted",
        "posted_minor", "pending_minor", "available_minor",
    ):  # fmt: skip
        item[column] = int(row[column])
    taken_at: datetime = row["taken_at"]
    item["taken_at"] = taken_at.isoformat()
    return item
