-- A fee rule prices the intents of one currency only: its `min_fee_minor` / `max_fee_minor` are in that
-- currency's minor units (as a limit rule's cap is, sql/0017). Before, a rule applied to intents of any
-- currency, so "at least 5.00 THB" (500) also charged a USD intent at least 5.00 USD.
-- Every rule made before was written for the wallet's currency, THB (PM_WALLET_CURRENCY's default): its
-- bounds were meant in satang. Its versions are that rule's, so they are THB too (their `definition`
-- JSON stays as saved). The columns then have no default: the admin API always names a currency.
ALTER TABLE pm.fee_rule ADD COLUMN currency text NOT NULL DEFAULT 'THB' CHECK (currency ~ '^[A-Z]{3}$');
ALTER TABLE pm.fee_rule ALTER COLUMN currency DROP DEFAULT;
ALTER TABLE pm.fee_rule_version ADD COLUMN currency text NOT NULL DEFAULT 'THB' CHECK (currency ~ '^[A-Z]{3}$');
ALTER TABLE pm.fee_rule_version ALTER COLUMN currency DROP DEFAULT;

-- Every process reloads its fee rules (now with their currency) within a second.
UPDATE pm.rule_generation SET generation = generation + 1;
