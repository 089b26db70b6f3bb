-- Currencies are part of every rule (issue 13): a limit rule caps one currency, and a route names the
-- currencies it serves. Before, both ignored the currency: a USD cent counted against a THB cap, and a
-- route to a PSP that carries only baht took a USD payout, held it and waited for its deadline.

-- A limit rule counts the intents of its currency only; max_amount_minor is in its minor units. Every
-- rule made before was written for the wallet's currency, THB (PM_WALLET_CURRENCY's default): that is the
-- currency its cap was counted in. The column then has no default: the admin API always names one.
ALTER TABLE pm.limit_rule ADD COLUMN currency text NOT NULL DEFAULT 'THB' CHECK (currency ~ '^[A-Z]{3}$');
ALTER TABLE pm.limit_rule ALTER COLUMN currency DROP DEFAULT;

-- A route serves the currencies it names (ISO 4217 codes, at least one, none NULL), each one its channel
-- carries (channels/*.py `currencies`; the admin API checks). Existing routes keep what they actually
-- served: the PSP channels only baht (IPPS and QP carry nothing else: their payouts in another currency
-- were held and never paid), every other channel (wallet to wallet, mini-apps, adjustments) each of the
-- ledger's currencies, as before. Versions are kept: what each route took and moved does not change.
ALTER TABLE pm.payment_route ADD COLUMN currencies text[];
UPDATE pm.payment_route
SET currencies = CASE
    WHEN channel IN ('IPPS_TRANSFER', 'QP_TRANSFER') THEN ARRAY['THB']
    ELSE ARRAY['EUR', 'THB', 'USD']
END;
-- One-dimensional, 1 to 16 codes, each three capital letters, none NULL, none twice. (A CHECK cannot
-- hold a subquery; a function can.)
CREATE FUNCTION pm.currency_codes_valid(codes text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT array_ndims(codes) = 1
       AND cardinality(codes) BETWEEN 1 AND 16
       AND NOT EXISTS (SELECT 1 FROM unnest(codes) AS c WHERE c IS NULL OR c !~ '^[A-Z]{3}$')
       AND cardinality(codes) = (SELECT count(DISTINCT c) FROM unnest(codes) AS c)
$$;
ALTER TABLE pm.payment_route
    ALTER COLUMN currencies SET NOT NULL,
    ADD CONSTRAINT payment_route_currencies_valid CHECK (pm.currency_codes_valid(currencies));

-- Every process reloads its rules (routes and limit rules) within a second.
UPDATE pm.rule_generation SET generation = generation + 1;
