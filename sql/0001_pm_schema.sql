-- The `pm` schema and the routing table (DESIGN.md §3): operation type + amount range -> channel.
-- Applied once by `pm db migrate`; never edit after it lands, add 0002_… instead.

-- IF NOT EXISTS: the migration runner creates the schema first to hold pm.schema_migrations.
CREATE SCHEMA IF NOT EXISTS pm;

CREATE TABLE pm.payment_route (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Upper-case identifiers, not a fixed list: a new channel is one file in channels/ plus a row here,
    -- with no schema change (DESIGN.md §1).
    operation_type   text        NOT NULL CHECK (operation_type ~ '^[A-Z][A-Z0-9_]{0,62}$'),
    -- Inclusive range of the intent amount, in minor units (satang); zero-amount intents never route.
    min_amount_minor bigint      NOT NULL CHECK (min_amount_minor >= 1),
    max_amount_minor bigint      NOT NULL,
    channel          text        NOT NULL CHECK (channel ~ '^[A-Z][A-Z0-9_]{0,62}$'),
    -- Among enabled routes whose range holds the amount, the lowest number wins; unique per operation
    -- type so the choice is never a tie.
    priority         integer     NOT NULL CHECK (priority >= 0),
    enabled          boolean     NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (max_amount_minor >= min_amount_minor),
    CHECK (updated_at >= created_at),
    UNIQUE (operation_type, priority)
);

-- Default routes cover every positive amount; per-user caps belong to the limits stage (DESIGN.md §6),
-- not to routing. 9223372036854775807 is the largest bigint.
INSERT INTO pm.payment_route (operation_type, min_amount_minor, max_amount_minor, channel, priority)
VALUES
    ('P2P_TRANSFER',     1, 9223372036854775807, 'INTERNAL_P2P',  100),
    ('IPPS_WITHDRAWAL',  1, 9223372036854775807, 'IPPS_TRANSFER', 100),
    ('THAI_QR_PAY',      1, 9223372036854775807, 'IPPS_TRANSFER', 100),
    ('QP_TOPUP',         1, 9223372036854775807, 'QP_TRANSFER',   100),
    ('MINIAPP_CHARGE',   1, 9223372036854775807, 'MINIAPP',       100),
    ('MINIAPP_CREDIT',   1, 9223372036854775807, 'MINIAPP',       100),
    ('ADMIN_ADJUSTMENT', 1, 9223372036854775807, 'ADJUSTMENT',    100);
