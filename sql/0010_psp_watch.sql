-- Payments PM voided at its deadline (FAILED EXPIRED) before the PSP gave a final answer: the PSP may
-- still pay, and its callback may never come (lost, or signed wrongly). The status poller asks the PSP
-- about each until it answers finally or `watch_until` passes (pm/psp_watch.py); a success is flagged
-- for review, never settled.
CREATE TABLE pm.psp_watch (
    intent_id     uuid        PRIMARY KEY REFERENCES pm.intent (id),
    watch_until   timestamptz NOT NULL,
    next_check_at timestamptz NOT NULL,
    checks        integer     NOT NULL DEFAULT 0 CHECK (checks >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX psp_watch_due ON pm.psp_watch (next_check_at);
