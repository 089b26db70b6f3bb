-- Issue 10: an Idempotency-Key is the caller's per user, and is kept for a retention; the nonces of
-- signed requests with effects are kept in PostgreSQL, so a replay is refused even after Redis lost them.

-- One Auth Center key signs for every user: user B's Idempotency-Key must not collide with user A's.
-- user_id is the signed X-User-Id; 0 when the request carried none (user ids are positive), so the key
-- stays NOT NULL and joins on it need no NULL care.
ALTER TABLE pm.idempotency ADD COLUMN user_id bigint NOT NULL DEFAULT 0 CHECK (user_id >= 0);
-- Records made before this migration get the X-User-Id their request carried, which the gateway put
-- on the intent by operation type (gateway/intents.py `parties`): a retry that straddles the migration
-- still finds its record instead of creating the intent again.
UPDATE pm.idempotency i SET user_id = coalesce(
    CASE intent.operation_type
        WHEN 'ADMIN_ADJUSTMENT' THEN intent.operator_id
        WHEN 'QP_TOPUP' THEN intent.recipient_id
        WHEN 'MINIAPP_CREDIT' THEN intent.recipient_id
        ELSE intent.sender_id
    END, 0)
FROM pm.intent intent
WHERE intent.id = i.intent_id;
ALTER TABLE pm.idempotency ALTER COLUMN user_id DROP DEFAULT;
ALTER TABLE pm.idempotency DROP CONSTRAINT idempotency_pkey;
ALTER TABLE pm.idempotency ADD PRIMARY KEY (api_key_id, user_id, idempotency_key);
-- Records past PM_IDEMPOTENCY_RETENTION_S are deleted oldest first, a bounded round at a time (poller).
-- IF NOT EXISTS: on a large table an operator may build it beforehand without blocking writes
-- (CREATE INDEX CONCURRENTLY idempotency_created ON pm.idempotency (created_at)), which a migration's
-- transaction cannot.
CREATE INDEX IF NOT EXISTS idempotency_created ON pm.idempotency (created_at);

-- The intent no longer carries the uniqueness: once a record expired, its key may name a new intent.
ALTER TABLE pm.intent DROP CONSTRAINT intent_api_key_id_idempotency_key_key;

-- Nonces of signed requests other than reads (POST /intents claims its nonce in the statement that
-- creates the intent). A row outlives the ±300 s window its request's timestamp could be accepted in
-- (pm.constants.NONCE_TTL_S), then the poller deletes it, a bounded round at a time.
CREATE TABLE pm.request_nonce (
    api_key_id text        NOT NULL,
    nonce      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, nonce)
);
CREATE INDEX request_nonce_created ON pm.request_nonce (created_at);
