-- Issue 12, item 9: the status poller deletes delivered outbox rows (merchant webhooks, review events) past
-- PM_WEBHOOK_RETENTION_S and PSP callback events past PM_PSP_EVENT_RETENTION_S, oldest first, a bounded
-- round at a time; these indexes let each round read only the rows it deletes. Intents and their event
-- rows are never deleted: they are the record.
-- IF NOT EXISTS: on a large table an operator may build them beforehand without blocking writes
-- (CREATE INDEX CONCURRENTLY ...), which a migration's transaction cannot.
CREATE INDEX IF NOT EXISTS outbox_delivered ON pm.outbox (delivered_at) WHERE delivered_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS psp_event_received ON pm.psp_event (received_at);
