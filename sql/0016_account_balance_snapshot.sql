-- Balance snapshots (DESIGN.md §1): every ledger account's balances as the status poller last read them
-- (consumers/balance_snapshot.py), for reporting without touching the ledger. Not the balance of record:
-- the ledger is. One row per account, rewritten by each snapshot; nothing else writes this table, and
-- nothing on the money path reads it.
-- Amounts are the ledger's u128 counters: numeric(39, 0) holds any of them (2^128 has 39 digits), and any
-- difference of two of them, sign included, as the ledger backend's own tables do.
CREATE TABLE pm.account_balance_snapshot (
    account_id       numeric(39, 0) PRIMARY KEY CHECK (account_id > 0),
    ledger           bigint         NOT NULL CHECK (ledger > 0),
    -- The ledger's ISO 4217 code; NULL for a ledger number PM has no currency for.
    currency         text           CHECK (currency ~ '^[A-Z]{3}$'),
    code             integer        NOT NULL,
    -- ledger.accounts.AccountKind of `code`, lower case (`user`, `transit`, ...), or `unknown`.
    kind             text           NOT NULL CHECK (kind ~ '^[a-z_]{1,32}$'),
    -- The account's name (`user:42:THB`) once known: ids are derived from names and cannot be reversed,
    -- so a user's or merchant's account is named from an intent of its newest transfer; NULL until then.
    name             text           CHECK (length(name) <= 200),
    user_id          bigint         CHECK (user_id > 0),
    merchant_id      bigint         CHECK (merchant_id > 0),
    debits_pending   numeric(39, 0) NOT NULL CHECK (debits_pending >= 0),
    debits_posted    numeric(39, 0) NOT NULL CHECK (debits_posted >= 0),
    credits_pending  numeric(39, 0) NOT NULL CHECK (credits_pending >= 0),
    credits_posted   numeric(39, 0) NOT NULL CHECK (credits_posted >= 0),
    -- What GET /api/pm/balance answers for a user (gateway/account.py), for every account alike: computed
    -- here, so a row cannot disagree with its own counters.
    posted_minor     numeric(39, 0) GENERATED ALWAYS AS (credits_posted - debits_posted) STORED,
    pending_minor    numeric(39, 0) GENERATED ALWAYS AS (debits_pending) STORED,
    available_minor  numeric(39, 0) GENERATED ALWAYS AS (credits_posted - debits_posted - debits_pending) STORED,
    -- Cluster time (ns) of the ledger's newest transfer just before the account was read: the balances
    -- include every transfer up to it (and possibly some written while the page was read).
    ledger_timestamp bigint         NOT NULL CHECK (ledger_timestamp >= 0),
    -- When this row was written, just after its page of accounts was read (the database's clock).
    taken_at         timestamptz    NOT NULL,
    CHECK (user_id IS NULL OR kind = 'user'),
    CHECK (merchant_id IS NULL OR kind = 'merchant')
) WITH (fillfactor = 50);
-- Every snapshot rewrites every row and no index covers what changes: with room on each page the updates
-- are HOT (no index entry written), as for the ledger's own accounts.

-- GET /admin/balances?kind=...: keyset pages of one kind, by account id.
CREATE INDEX account_balance_snapshot_kind ON pm.account_balance_snapshot (kind, account_id);
