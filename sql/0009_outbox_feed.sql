-- The app's feed through the outbox (issue 5): every transition's pm.intent_event row, written in the
-- same statement as the transition, is the outbox record of the app's status message and, for a final
-- state, of the users' history rows. The outbox worker reads the log in commit-safe order and delivers
-- both (pm/outbox_feed.py): status messages on Redis pub/sub `intent.{id}`, history rows into pm.history
-- in the transaction that moves its cursor.

-- The writing transaction's id. The worker reads only events whose transaction ended before its
-- snapshot (xid < the snapshot's xmin), ordered by (xid, intent_id, version): no event can later appear
-- behind the cursor, which a sequence (assigned at insert, committed in another order) could not promise.
-- Rows written before this migration get xid 0, behind the initial cursor below: their statuses went
-- out from the stages and their history was written by the history stage.
ALTER TABLE pm.intent_event ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE pm.intent_event ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
-- Except the final events of intents the history stage had not finished yet (it is gone): ahead of the
-- cursor, so the outbox worker delivers them (status again, history, limit places, finished).
UPDATE pm.intent_event e SET xid = pg_current_xact_id()
FROM pm.intent i
WHERE i.id = e.intent_id AND i.version = e.version AND i.state IN ('SETTLED', 'REJECTED', 'FAILED')
  AND NOT i.history_written;
CREATE INDEX intent_event_feed ON pm.intent_event (xid, intent_id, version);

CREATE TABLE pm.outbox_cursor (
    name       text        PRIMARY KEY,
    -- The last event delivered: (xid, intent_id, version).
    xid        xid8        NOT NULL,
    intent_id  uuid        NOT NULL,
    version    integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pm.outbox_cursor (name, xid, intent_id, version)
VALUES ('app', '0', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 2147483647);

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
-- One webhook per transition; a review event per flag (an intent cleared by an operator may be flagged again).
ALTER TABLE pm.outbox DROP CONSTRAINT outbox_intent_id_version_kind_key;
CREATE UNIQUE INDEX outbox_webhook_once ON pm.outbox (intent_id, version) WHERE kind = 'merchant_webhook';
-- The history stage's stream (pm:intents:finished) is no longer read (the intents its entries name are
-- delivered above): an operator may delete it (`DEL pm:intents:finished`).
