-- A replayed POST /intents is answered from the intent's own row (Intent.as_created): the create
-- statement is the only write of a gateway batch, so a lost first answer costs nothing to rebuild and no
-- second statement marks the record answered. The stored-response columns stay for records written
-- before this migration (and by a gateway of that time during a rolling deploy), which replay them.
COMMENT ON COLUMN pm.idempotency.response_status IS
    'Only for records written before sql/0021: the HTTP status first answered; NULL means answer from the intent row.';
COMMENT ON COLUMN pm.idempotency.response_body IS
    'Only for records written before sql/0021: the body first answered; NULL means answer from the intent row.';
