-- Money rules (issue 4): CEL fee rules with versions, limit rules, the admin audit trail, and a
-- generation counter every rule change bumps so every process reloads within a second.

-- Fee rules. The row holds the current version; every version ever saved is kept in fee_rule_version,
-- and an intent records (rule id, version) of the rules that priced it, so an edit never changes an
-- intent already priced.
CREATE TABLE pm.fee_rule (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version        integer     NOT NULL CHECK (version >= 1),
    name           text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    operation_type text        CHECK (operation_type ~ '^[A-Z][A-Z0-9_]{0,62}$'),   -- NULL: any
    channel        text        CHECK (channel ~ '^[A-Z][A-Z0-9_]{0,62}$'),          -- NULL: any
    condition      text        NOT NULL CHECK (length(condition) BETWEEN 1 AND 2000),
    amount         text        NOT NULL CHECK (length(amount) BETWEEN 1 AND 2000),
    kind           text        NOT NULL CHECK (kind IN ('PRE', 'POST')),
    priority       integer     NOT NULL CHECK (priority >= 0),
    min_fee_minor  bigint      NOT NULL DEFAULT 0 CHECK (min_fee_minor >= 0),
    max_fee_minor  bigint      CHECK (max_fee_minor >= 0),
    valid_from     timestamptz,
    valid_to       timestamptz,
    enabled        boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (max_fee_minor IS NULL OR max_fee_minor >= min_fee_minor),
    CHECK (valid_to IS NULL OR valid_from IS NULL OR valid_to > valid_from)
);

CREATE TABLE pm.fee_rule_version (
    rule_id        bigint      NOT NULL REFERENCES pm.fee_rule (id),
    version        integer     NOT NULL,
    definition     jsonb       NOT NULL,  -- every field of the rule as saved in this version
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, version)
);

-- Limits per user: the sum (and optionally the count) of a user's intents of an operation type (or any)
-- carrying a tag (or any), per calendar day or month in the wallet's time zone (Asia/Bangkok).
CREATE TABLE pm.limit_rule (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version          integer     NOT NULL DEFAULT 1 CHECK (version >= 1),
    operation_type   text        CHECK (operation_type ~ '^[A-Z][A-Z0-9_]{0,62}$'),  -- NULL: any
    tag              text        CHECK (length(tag) BETWEEN 1 AND 64),              -- NULL: any
    period           text        NOT NULL CHECK (period IN ('daily', 'monthly')),
    max_amount_minor bigint      NOT NULL CHECK (max_amount_minor >= 0),
    max_count        integer     CHECK (max_count >= 0),
    enabled          boolean     NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE pm.payment_route ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);

-- Every change made through the admin API: who (key id, operator), what, when, before and after.
CREATE TABLE pm.admin_audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    api_key_id  text        NOT NULL,
    operator_id bigint,
    entity      text        NOT NULL CHECK (entity IN ('fee_rule', 'limit_rule', 'route')),
    entity_id   bigint      NOT NULL,
    action      text        NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    before      jsonb,
    after       jsonb
);
CREATE INDEX admin_audit_newest ON pm.admin_audit (at DESC, id DESC);

-- Bumped in the same transaction as every rule or route change; processes poll it to reload.
CREATE TABLE pm.rule_generation (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint  NOT NULL
);
INSERT INTO pm.rule_generation (singleton, generation) VALUES (true, 1);
