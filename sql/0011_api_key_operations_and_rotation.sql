-- Issue 10: what an API key may create, and when a rotated-out secret stops working.

-- The operation types (pm.domain.OperationType names) a key may create with POST /intents (and quote
-- with POST /quote); any other is refused with 403 OPERATION_NOT_ALLOWED before anything is written.
ALTER TABLE pm.api_key ADD COLUMN operations text[] NOT NULL DEFAULT '{}';

-- Existing keys get what they could do until now, except that a merchant-bound key keeps only its
-- merchant's operations (it could send any type as any user: the hole this closes):
--   neither intents:write nor admin        -> nothing (the route refused them anyway)
--   bound to a merchant                    -> MINIAPP_CHARGE, MINIAPP_CREDIT
--   admin                                  -> every type but the MINIAPP ones (those need a merchant)
--   intents:write                          -> the user operations (ADMIN_ADJUSTMENT needed admin)
UPDATE pm.api_key SET operations = CASE
    WHEN NOT (scopes && ARRAY['intents:write', 'admin']::text[]) THEN '{}'::text[]
    WHEN merchant_id IS NOT NULL THEN ARRAY['MINIAPP_CHARGE', 'MINIAPP_CREDIT']
    WHEN 'admin' = ANY (scopes) THEN ARRAY['P2P_TRANSFER', 'IPPS_WITHDRAWAL', 'THAI_QR_PAY', 'QP_TOPUP', 'ADMIN_ADJUSTMENT']
    ELSE ARRAY['P2P_TRANSFER', 'IPPS_WITHDRAWAL', 'THAI_QR_PAY', 'QP_TOPUP']
END;

ALTER TABLE pm.api_key
    -- Upper-case identifiers, like pm.intent.operation_type; the code checks them against its enum.
    ADD CONSTRAINT api_key_operations_named
        CHECK (array_position(operations, NULL) IS NULL
               AND array_to_string(operations, ',') ~ '^([A-Z][A-Z0-9_]{0,62}(,[A-Z][A-Z0-9_]{0,62})*)?$'),
    -- Defence in depth: a merchant's key never holds anything but its merchant's operations, and only a
    -- merchant's key holds those (the gateway checks both again at every request).
    ADD CONSTRAINT api_key_merchant_operations_only
        CHECK (merchant_id IS NULL OR operations <@ ARRAY['MINIAPP_CHARGE', 'MINIAPP_CREDIT']::text[]),
    ADD CONSTRAINT api_key_miniapp_needs_merchant
        CHECK (merchant_id IS NOT NULL OR NOT (operations && ARRAY['MINIAPP_CHARGE', 'MINIAPP_CREDIT']::text[]));

-- A rotation keeps the previous secret working until this moment (`pm keys rotate --grace`, default
-- 24 h; 0 drops it at once). Every gateway compares it with its clock at each verification.
ALTER TABLE pm.api_key ADD COLUMN previous_secret_expires_at timestamptz;
-- Previous secrets rotated out before this migration never expired: they get one default grace from
-- now (a caller still signing with one has a day to move), then stop. After a leak, rotate again with
-- --grace 0, which drops both.
UPDATE pm.api_key SET previous_secret_expires_at = now() + interval '24 hours' WHERE previous_secret IS NOT NULL;
ALTER TABLE pm.api_key ADD CONSTRAINT api_key_previous_secret_expires
    CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL));
