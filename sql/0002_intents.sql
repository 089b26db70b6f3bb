-- Intents, their transition events, users' history, API clients (HMAC keys) and idempotency records.
-- Money amounts are bigint minor units (satang); never floats.

CREATE TABLE pm.intent (
    id               uuid        PRIMARY KEY,
    state            text        NOT NULL CHECK (state IN
                         ('CREATED', 'VALIDATED', 'PRICED', 'CLEARED', 'AUTHORIZED', 'SETTLED', 'REJECTED', 'FAILED')),
    -- Grows by one on every transition; clients order status updates by it.
    version          integer     NOT NULL CHECK (version >= 1),
    operation_type   text        NOT NULL CHECK (operation_type ~ '^[A-Z][A-Z0-9_]{0,62}$'),
    amount_minor     bigint      NOT NULL CHECK (amount_minor > 0),
    currency         text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- NULL for the side a user does not hold: the adjustments account of ADMIN_ADJUSTMENT.
    sender_id        bigint      CHECK (sender_id > 0),
    recipient_id     bigint      CHECK (recipient_id > 0),
    -- ADMIN_ADJUSTMENT: the operator who asked for it (X-User-Id), recorded, not a party.
    operator_id      bigint      CHECK (operator_id > 0),
    channel          text,
    fee_pre_minor    bigint      NOT NULL DEFAULT 0 CHECK (fee_pre_minor >= 0),
    fee_post_minor   bigint      NOT NULL DEFAULT 0 CHECK (fee_post_minor >= 0),
    -- The fee rules (id, version, kind, fee) that priced this intent.
    fee_rules        jsonb       NOT NULL DEFAULT '[]',
    tags             text[]      NOT NULL DEFAULT '{}',
    error_code       text,
    error_message    text,
    -- Who created it: the API key, and that caller's Idempotency-Key.
    api_key_id       text        NOT NULL,
    idempotency_key  text        NOT NULL,
    -- Set when a stage gave up on it (dead letter): an operator must look.
    needs_operator   boolean     NOT NULL DEFAULT false,
    history_written  boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- When the status poller last re-published it (NULL: never).
    redriven_at      timestamptz,
    CHECK ((state IN ('REJECTED', 'FAILED')) = (error_code IS NOT NULL)),
    CHECK (sender_id IS NOT NULL OR recipient_id IS NOT NULL),
    UNIQUE (api_key_id, idempotency_key)
);
-- The status poller's work list: non-terminal intents by age, and terminal ones without history yet.
CREATE INDEX intent_open ON pm.intent (updated_at) WHERE state NOT IN ('SETTLED', 'REJECTED', 'FAILED');
CREATE INDEX intent_history_pending ON pm.intent (updated_at)
    WHERE state IN ('SETTLED', 'REJECTED', 'FAILED') AND NOT history_written;

-- One row per transition: the audit trail, and the source of "events since version N" (SSE).
CREATE TABLE pm.intent_event (
    intent_id     uuid        NOT NULL REFERENCES pm.intent (id),
    version       integer     NOT NULL,
    state         text        NOT NULL,
    error_code    text,
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (intent_id, version)
);

-- What the app shows a user: one row per user and intent they are party to, newest first.
CREATE TABLE pm.history (
    user_id         bigint      NOT NULL,
    intent_id       uuid        NOT NULL REFERENCES pm.intent (id),
    direction       text        NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    counterparty_id bigint,
    operation_type  text        NOT NULL,
    -- What moved on this user's balance: the sender's debit includes a PRE fee; the recipient's
    -- credit is net of a POST fee; zero for an intent that ended without moving money.
    amount_minor    bigint      NOT NULL CHECK (amount_minor >= 0),
    fee_minor       bigint      NOT NULL CHECK (fee_minor >= 0),
    currency        text        NOT NULL,
    state           text        NOT NULL,
    error_code      text,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    PRIMARY KEY (user_id, intent_id)
);
CREATE INDEX history_by_user_newest ON pm.history (user_id, created_at DESC, intent_id DESC);

-- Callers' HMAC keys. Two secrets may be active at once so a key can rotate without downtime.
CREATE TABLE pm.api_key (
    key_id           text        PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9_-]{8,64}$'),
    name             text        NOT NULL,
    scopes           text[]      NOT NULL,
    secret           text        NOT NULL,
    previous_secret  text,
    -- A mini-app backend's key is bound to one merchant (issue 5); NULL for other callers.
    merchant_id      bigint      CHECK (merchant_id > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    rotated_at       timestamptz,
    revoked_at       timestamptz,
    CHECK (scopes <@ ARRAY['intents:write', 'intents:read', 'balance:read', 'admin']::text[])
);

-- Idempotency records: one per (caller, Idempotency-Key); the stored response is replayed.
CREATE TABLE pm.idempotency (
    api_key_id      text        NOT NULL,
    idempotency_key text        NOT NULL,
    -- sha256 over method, path, X-User-Id and body: the same key with another request is refused.
    request_hash    bytea       NOT NULL,
    intent_id       uuid,
    -- NULL while the first request is still in flight.
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (api_key_id, idempotency_key)
);
