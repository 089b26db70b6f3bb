-- Fields the async and mini-app channels need on an intent (issue 5).
-- MINIAPP_CHARGE / MINIAPP_CREDIT: the merchant whose account pays or is paid; it comes from the
-- caller's API key (a mini-app backend's key is bound to one merchant), never from the body.
ALTER TABLE pm.intent ADD COLUMN merchant_id bigint CHECK (merchant_id > 0);
-- IPPS_WITHDRAWAL / THAI_QR_PAY: an opaque token from the Auth Center naming where the money goes;
-- never an account number or a name in clear, so bounded and of token characters only.
ALTER TABLE pm.intent ADD COLUMN destination_ref text
    CHECK (destination_ref ~ '^[A-Za-z0-9_.:-]{1,128}$');
