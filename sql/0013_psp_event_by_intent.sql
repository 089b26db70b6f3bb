-- `pm intents show ID` lists an intent's PSP events: by intent, oldest first, without scanning them all.
CREATE INDEX psp_event_by_intent ON pm.psp_event (intent_id, received_at);
