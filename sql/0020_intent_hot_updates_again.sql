-- Stage transitions as HOT updates again (sql/0005): an index whose key is `updated_at` (0007's review
-- list) or whose WHERE reads `state` (0018's waiting charges) made every transition of every intent a
-- non-HOT update, a new entry in each of pm.intent's indexes. Both lists now read columns a transition
-- never changes (tests/integration/test_intent_hot_updates.py counts it on PostgreSQL).
-- IF [NOT] EXISTS, as 0014: on a large pm.intent an operator may build the new indexes beforehand
-- (CREATE INDEX CONCURRENTLY ...) and drop the old ones (DROP INDEX CONCURRENTLY ...), which a
-- migration's transaction cannot.

-- The operator's review list (pm/store/reviews.py): the flagged intents, few; sorted after the scan.
CREATE INDEX IF NOT EXISTS intent_flagged_for_review ON pm.intent (created_at) WHERE needs_review;
DROP INDEX IF EXISTS pm.intent_needs_review;
-- The poller's expiry of waiting charges (consumers/confirmations.py): mini-app charges not finished,
-- oldest first, the waiting ones among them filtered on the table row.
CREATE INDEX IF NOT EXISTS intent_miniapp_unfinished ON pm.intent (created_at)
    WHERE operation_type = 'MINIAPP_CHARGE' AND NOT finished;
DROP INDEX IF EXISTS pm.intent_awaiting_confirmation;
