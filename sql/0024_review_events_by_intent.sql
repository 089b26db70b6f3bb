-- A review reason that no longer fits in pm.intent.review_reason (500 characters) is still announced on
-- the review stream, up to a bound per intent, and once per reason (pm/store/reviews.py): both are
-- looked up among the intent's review events, which this index finds without reading the whole outbox.
CREATE INDEX IF NOT EXISTS outbox_review_by_intent ON pm.outbox (intent_id) WHERE kind = 'review';
