-- The outbox (issue 5): what others must hear about a state change is written in the same statement
-- as the change (pm/intents.py apply_transitions), then delivered at least once by `pm run outbox`.
-- Mini-app backends: where each merchant's webhooks go, and the secret they are signed with.
CREATE TABLE pm.merchant_webhook (
    merchant_id bigint      PRIMARY KEY CHECK (merchant_id > 0),
    url         text        NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    secret      text        NOT NULL CHECK (length(secret) BETWEEN 16 AND 200),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pm.outbox (
    id              bigserial   PRIMARY KEY,
    -- The receiver's dedupe key; with the intent's version it also tells the order of events.
    event_id        uuid        NOT NULL UNIQUE,
    kind            text        NOT NULL CHECK (kind IN ('merchant_webhook')),
    intent_id       uuid        NOT NULL,
    version         integer     NOT NULL,
    merchant_id     bigint      NOT NULL,
    payload         jsonb       NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    -- Past the retry window (24 h) without a 2xx: an operator looks (`pm outbox list`, `pm outbox retry`).
    gave_up_at      timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (intent_id, version, kind)
);
CREATE INDEX outbox_due ON pm.outbox (next_attempt_at) WHERE delivered_at IS NULL AND gave_up_at IS NULL;
