-- The postgres ledger backend's own tables (TigerBeetle's data model on PostgreSQL).
-- Applied by the backend on connect; every statement is idempotent.
-- 128-bit ids are uuid (16 bytes, fast to index); 128-bit amounts are numeric(39,0).
CREATE SCHEMA IF NOT EXISTS tb_ledger;

-- Cluster time. Every write request locks this one row first, so requests from any number of
-- processes apply one at a time, in timestamp order, exactly as a TigerBeetle cluster does.
CREATE TABLE IF NOT EXISTS tb_ledger.cluster (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_timestamp bigint  NOT NULL CHECK (last_timestamp >= 0)
);
INSERT INTO tb_ledger.cluster (singleton, last_timestamp) VALUES (true, 0) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS tb_ledger.accounts (
    id              uuid PRIMARY KEY,
    debits_pending  numeric(39, 0) NOT NULL CHECK (debits_pending >= 0),
    debits_posted   numeric(39, 0) NOT NULL CHECK (debits_posted >= 0),
    credits_pending numeric(39, 0) NOT NULL CHECK (credits_pending >= 0),
    credits_posted  numeric(39, 0) NOT NULL CHECK (credits_posted >= 0),
    user_data_128   uuid           NOT NULL,
    user_data_64    numeric(20, 0) NOT NULL,
    user_data_32    bigint         NOT NULL,
    ledger          bigint         NOT NULL CHECK (ledger > 0),
    code            integer        NOT NULL CHECK (code > 0),
    flags           integer        NOT NULL,
    timestamp       bigint         NOT NULL UNIQUE
) WITH (fillfactor = 50);
-- Balances change on every transfer and no index covers them: with room on each page, those updates
-- are HOT (no index entry written). Also for a ledger made before this line.
ALTER TABLE tb_ledger.accounts SET (fillfactor = 50);
CREATE INDEX IF NOT EXISTS accounts_user_data_128 ON tb_ledger.accounts (user_data_128, timestamp);
CREATE INDEX IF NOT EXISTS accounts_ledger ON tb_ledger.accounts (ledger, timestamp);

CREATE TABLE IF NOT EXISTS tb_ledger.transfers (
    id                uuid PRIMARY KEY,
    debit_account_id  uuid           NOT NULL,
    credit_account_id uuid           NOT NULL,
    amount            numeric(39, 0) NOT NULL,
    pending_id        uuid           NOT NULL,
    user_data_128     uuid           NOT NULL,
    user_data_64      numeric(20, 0) NOT NULL,
    user_data_32      bigint         NOT NULL,
    timeout           bigint         NOT NULL,
    ledger            bigint         NOT NULL,
    code              integer        NOT NULL,
    flags             integer        NOT NULL,
    timestamp         bigint         NOT NULL UNIQUE,
    -- For pending transfers: 1 pending, 2 posted, 3 voided, 4 expired; and when it expires (ns).
    pending_status    smallint,
    expires_at        bigint,
    -- Balances right after this transfer, for accounts with flags.history (else NULL).
    dr_debits_pending numeric(39, 0), dr_debits_posted numeric(39, 0),
    dr_credits_pending numeric(39, 0), dr_credits_posted numeric(39, 0),
    cr_debits_pending numeric(39, 0), cr_debits_posted numeric(39, 0),
    cr_credits_pending numeric(39, 0), cr_credits_posted numeric(39, 0)
);
CREATE INDEX IF NOT EXISTS transfers_debit_account ON tb_ledger.transfers (debit_account_id, timestamp);
CREATE INDEX IF NOT EXISTS transfers_credit_account ON tb_ledger.transfers (credit_account_id, timestamp);
CREATE INDEX IF NOT EXISTS transfers_user_data_128 ON tb_ledger.transfers (user_data_128, timestamp);
CREATE INDEX IF NOT EXISTS transfers_expiring ON tb_ledger.transfers (expires_at, timestamp)
    WHERE pending_status = 1 AND expires_at IS NOT NULL;

-- Ids of transfers that failed transiently: retries answer id_already_failed forever.
CREATE TABLE IF NOT EXISTS tb_ledger.orphan_transfer_ids (
    id uuid PRIMARY KEY
);
