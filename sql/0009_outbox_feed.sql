-- The app's feed through the outbox (issue 5): every transition's pm.intent_event row, written in the
-- same statement as the transition, is the outbox record of the app's status message and, for a final
-- state, of the users' history rows. The outbox worker reads the log in commit-safe order and delivers
-- both (pm/outbox_feed.py): status messages on Redis pub/sub `intent.{id}`, history rows into pm.history
-- in the transaction that moves its cursor.

-- The writing transaction's id. The worker reads only events whose transaction ended before its
-- snapshot (xid < the snapshot's xmin), ordered by (xid, intent_id, version): no event can later appear
-- behind the cursor, which a sequence (assigned at insert, committed in another order) could not promise.
ALTER TABLE pm.intent_event ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX intent_event_feed ON pm.intent_event (xid, intent_id, version);

CREATE TABLE pm.outbox_cursor (
    name       text        PRIMARY KEY,
    -- The last event delivered: (xid, intent_id, version).
    xid        xid8        NOT NULL,
    intent_id  uuid        NOT NULL,
    version    integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Events written before this migration were published and written to history by the stages.
INSERT INTO pm.outbox_cursor (name, xid, intent_id, version)
VALUES ('app', pg_current_xact_id(), 'ffffffff-ffff-ffff-ffff-ffffffffffff', 2147483647);

-- No stage writes history any more: the outbox worker ends a final intent (history, refused limit
-- places given back) and sets `finished`, which takes it off the status poller's work list.
ALTER TABLE pm.intent RENAME COLUMN history_written TO finished;

-- History names the merchant of a mini-app charge or credit.
ALTER TABLE pm.history ADD COLUMN merchant_id bigint CHECK (merchant_id > 0);

-- Review flags are outbox events too (delivered on the review stream), and carry no merchant.
ALTER TABLE pm.outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE pm.outbox ADD CONSTRAINT outbox_kind_check CHECK (kind IN ('merchant_webhook', 'review'));
ALTER TABLE pm.outbox ALTER COLUMN merchant_id DROP NOT NULL;
ALTER TABLE pm.outbox ADD CONSTRAINT outbox_webhook_merchant CHECK (kind <> 'merchant_webhook' OR merchant_id IS NOT NULL);
