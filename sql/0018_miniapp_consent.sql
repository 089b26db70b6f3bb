-- A mini-app charge needs its user's consent (issue 13 part 6). A MINIAPP_CHARGE waits in
-- AWAITING_CONFIRMATION (nothing held; no stage consumes it) until the user confirms it
-- (POST /intents/{id}/confirm) or the status poller rejects it CONFIRMATION_EXPIRED, unless it falls
-- within an allowance the user granted its merchant beforehand (a daily cap, revocable).
ALTER TABLE pm.intent DROP CONSTRAINT intent_state_check;
ALTER TABLE pm.intent ADD CONSTRAINT intent_state_check CHECK (state IN
    ('CREATED', 'VALIDATED', 'PRICED', 'CLEARED', 'AUTHORIZED', 'SETTLED', 'REJECTED', 'FAILED',
     'AWAITING_CONFIRMATION'));

-- The poller's expiry reads the waiting intents oldest first; few at a time are waiting.
CREATE INDEX intent_awaiting_confirmation ON pm.intent (updated_at)
    WHERE state = 'AWAITING_CONFIRMATION';

-- What a user allows a merchant to charge without asking, per day (Asia/Bangkok) and currency, in that
-- currency's minor units. Revoking deletes the row; what was used today stays counted.
CREATE TABLE pm.miniapp_allowance (
    user_id          bigint      NOT NULL CHECK (user_id > 0),
    merchant_id      bigint      NOT NULL CHECK (merchant_id > 0),
    currency         text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    daily_max_minor  bigint      NOT NULL CHECK (daily_max_minor > 0),
    granted_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, merchant_id, currency)
);

-- What the charges reserved of an allowance on one day: the one row a conditional upsert adds to
-- (used_minor + amount <= cap), so concurrent charges can never take more than the cap together.
CREATE TABLE pm.miniapp_allowance_usage (
    user_id          bigint      NOT NULL,
    merchant_id      bigint      NOT NULL,
    currency         text        NOT NULL,
    day              date        NOT NULL,
    used_minor       bigint      NOT NULL CHECK (used_minor >= 0),
    PRIMARY KEY (user_id, merchant_id, currency, day)
);

-- One row per charge that an allowance covered: at most one reservation per intent, given back at most
-- once (released_at) when the charge ends REJECTED or FAILED.
CREATE TABLE pm.miniapp_allowance_reservation (
    intent_id        uuid        PRIMARY KEY REFERENCES pm.intent (id),
    user_id          bigint      NOT NULL,
    merchant_id      bigint      NOT NULL,
    currency         text        NOT NULL,
    day              date        NOT NULL,
    amount_minor     bigint      NOT NULL CHECK (amount_minor > 0),
    reserved_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    released_at      timestamptz
);

-- A new scope: `consent:write`, the app's (the nginx edge's key) to confirm a user's charges and manage
-- the user's allowances. `balance:read` is not enough: reading is not agreeing to pay.
ALTER TABLE pm.api_key DROP CONSTRAINT api_key_scopes_check;
ALTER TABLE pm.api_key ADD CONSTRAINT api_key_scopes_check
    CHECK (scopes <@ ARRAY['intents:write', 'intents:read', 'balance:read', 'consent:write', 'admin']::text[]);
