-- Refunds (issue 13 part 4): a REFUND intent gives back part or all of a SETTLED P2P_TRANSFER or
-- MINIAPP_CHARGE, through the pipeline like any intent (channel REFUND, channels/refund.py).

-- The intent a REFUND gives money back for (NULL for every other intent).
ALTER TABLE pm.intent ADD COLUMN refund_of uuid REFERENCES pm.intent (id);
-- On an original: the sum of its refunds not refused, reserved when each refund is created (one
-- conditional UPDATE in the refund's creating transaction: `refunded_minor + amount <= amount_minor`),
-- given back once by the history stage when a refund ends REJECTED or FAILED. So the refunds of one
-- intent never add up to more than it moved, however many are asked for at once.
ALTER TABLE pm.intent ADD COLUMN refunded_minor bigint NOT NULL DEFAULT 0;
ALTER TABLE pm.intent
    ADD CONSTRAINT intent_refunded_within_amount CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    ADD CONSTRAINT intent_refund_names_original CHECK ((operation_type = 'REFUND') = (refund_of IS NOT NULL));
CREATE INDEX intent_refund_of ON pm.intent (refund_of) WHERE refund_of IS NOT NULL;

-- A merchant's key may also refund its own charges (the gateway checks the charge is its merchant's).
ALTER TABLE pm.api_key
    DROP CONSTRAINT api_key_merchant_operations_only,
    ADD CONSTRAINT api_key_merchant_operations_only
        CHECK (merchant_id IS NULL OR operations <@ ARRAY['MINIAPP_CHARGE', 'MINIAPP_CREDIT', 'REFUND']::text[]);

-- Every refund goes through the REFUND channel, in each of the ledger's currencies (wallet accounts only).
INSERT INTO pm.payment_route (operation_type, min_amount_minor, max_amount_minor, channel, priority, currencies)
VALUES ('REFUND', 1, 9223372036854775807, 'REFUND', 100, ARRAY['EUR', 'THB', 'USD']);

-- Every process reloads its rules (routes) within a second.
UPDATE pm.rule_generation SET generation = generation + 1;
