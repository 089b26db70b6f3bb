-- A missing limit counter is rebuilt from the sender's intents of one day or month (pm/limit_counters.py);
-- this index makes that a range scan of one user's rows. Intents without a sender are never limited.
CREATE INDEX intent_by_sender_created ON pm.intent (sender_id, created_at) WHERE sender_id IS NOT NULL;
