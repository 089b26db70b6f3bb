-- PSP callbacks (issue 5): each (channel, event id) is taken once, whatever a PSP resends, so a
-- duplicate or replayed callback can never cause a second transition.
CREATE TABLE pm.psp_event (
    channel     text        NOT NULL,
    event_id    text        NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    intent_id   uuid        NOT NULL,
    -- What the (signature-checked) callback said: SUCCEEDED, DECLINED, PROCESSING, PAID, EXPIRED, ...
    status      text        NOT NULL CHECK (length(status) BETWEEN 1 AND 32),
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, event_id)
);

-- A PSP reported success for an intent we had already failed (the hold was voided): money may have
-- left at the PSP while the wallet kept it. Never settled silently; an operator decides (README).
ALTER TABLE pm.intent ADD COLUMN needs_review boolean NOT NULL DEFAULT false;
ALTER TABLE pm.intent ADD COLUMN review_reason text CHECK (length(review_reason) <= 500);
CREATE INDEX intent_needs_review ON pm.intent (updated_at) WHERE needs_review;
