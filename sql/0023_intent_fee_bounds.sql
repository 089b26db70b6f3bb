-- The fees a caller agreed to (POST /intents `max_fee_pre_minor`, `max_fee_post_minor`): the fees stage
-- rejects the intent FEE_CHANGED, before any money is held, when a fee it prices is above its bound, so a
-- rule edited after the quote (or while the fees stage is behind) cannot charge a fee the user never saw.
-- NULL: no bound (every intent before this migration, and a caller that sends none).
-- Two nullable columns rather than a key in a JSON column: written once by the creating INSERT and never
-- by a transition, in no index, so every stage transition stays a HOT update (sql/0005, sql/0020); a NULL
-- costs a bit of the row's null bitmap, and ADD COLUMN without a default rewrites nothing. The
-- idempotency record's request hash covers the whole body, bounds included (sql/0021's replay answers
-- the intent's row, which now carries them).
ALTER TABLE pm.intent
    ADD COLUMN max_fee_pre_minor bigint CONSTRAINT intent_max_fee_pre_not_negative CHECK (max_fee_pre_minor >= 0),
    ADD COLUMN max_fee_post_minor bigint CONSTRAINT intent_max_fee_post_not_negative CHECK (max_fee_post_minor >= 0);
