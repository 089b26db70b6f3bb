"""The feed, delivered by the outbox worker from the intent event log: status messages on Redis pub/sub
`intent.{id}` for the app, and for a final state the intent's entry on the history stage's stream
(consumers/history.py writes the users' history rows, gives back refused limit places and sets
`finished`). The pipeline's stages stop at the final transition; the history stage is fed only from here.

Every transition writes its `pm.intent_event` row in the statement that makes it (pm/store/intents.py), so
that log is the outbox record of all of these: a committed change cannot miss them. Per round, in
one PostgreSQL transaction:

1. take the feed's advisory lock (one worker feeds at a time; another skips the round and delivers
   webhooks), and read the cursor: the last event delivered, as (xid, intent_id, version);
2. read up to `FEED_BATCH_MAX` events after it, only those whose transaction ended before this
   statement's snapshot (`xid < pg_snapshot_xmin`): an event in flight now commits with a larger key
   than any read, so none ever lands behind the cursor (a sequence, numbered at insert and committed
   in another order, could not promise that);
3. load the final ones' intents (one statement), then publish the status messages and add the final
   intents to the history stage's stream, in that order, in one Redis call (a script);
4. move the cursor; commit.

Delivery is at least once: a crash before the commit publishes the same messages again, with the same
derived `event_id` (a receiver drops those and orders by `version`), and adds the final intents to the
history stream again; the history stage is idempotent (a row per (intent, user) once, a limit place given
back once). Should Redis lose that stream, the status poller re-drives every final intent not `finished`.
A transaction left open anywhere in the cluster holds the feed back
(it cannot know what that transaction will write): `pm_outbox_feed_delay_seconds` shows it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson
import redis.asyncio as aioredis

from pm.config import metrics
from pm.config.topology import Topology
from pm.domain.intent import TERMINAL_STATE_NAMES
from pm.redis import streams
from pm.store.intents import event_message, load_intents

FEED_BATCH_MAX = 2_000
CURSOR_NAME = "app"
# Any constant works if every worker uses it: the ASCII bytes "pm_feed!".
FEED_LOCK_KEY = 0x706D5F6665656421

# Two statements, not one: the cursor must be read with a snapshot taken after the lock is held, or a
# round could read the cursor as it was before the previous holder committed, and deliver again.
_LOCK_SQL = "SELECT pg_try_advisory_xact_lock($1)"
_CURSOR_SQL = """
SELECT xid::text AS xid, intent_id, version, xid > pg_snapshot_xmax(pg_current_snapshot()) AS ahead
FROM pm.outbox_cursor WHERE name = $1
"""
_EVENTS_SQL = """
SELECT xid::text AS xid_text, intent_id, version, state, error_code, error_message, created_at FROM pm.intent_event
WHERE (xid, intent_id, version) > ($1::text::xid8, $2, $3) AND xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY xid, intent_id, version
LIMIT $4
"""
# When nothing is deliverable: the oldest event after the cursor all the same (held back by an open
# transaction), for the delay gauge.
_OLDEST_SQL = """
SELECT created_at FROM pm.intent_event WHERE (xid, intent_id, version) > ($1::text::xid8, $2, $3)
ORDER BY xid, intent_id, version LIMIT 1
"""


class FeedCursorAheadError(RuntimeError):
    """The cursor names a transaction id this cluster has not reached: the database was restored from a
    dump (or moved by logical replication) into a cluster whose transaction ids are lower."""


@dataclass(frozen=True, slots=True)
class FeedRound:
    events: int  # status messages published
    finals: int  # final intents added to the history stage's stream
    locked_out: bool = False  # another worker holds the feed


# The round's one write, run last, so its transaction holds a transaction id (which holds back every other
# snapshot's horizon) only for this statement and its commit.
_MOVE_SQL = """
UPDATE pm.outbox_cursor SET xid = $2::text::xid8, intent_id = $3, version = $4, updated_at = now() WHERE name = $1
"""


async def feed_once(pool: asyncpg.Pool, redis: aioredis.Redis, topology: Topology) -> FeedRound:
    # READ COMMITTED, whatever the server's default: the cursor read must see the last holder's commit.
    async with pool.acquire() as conn, conn.transaction(isolation="read_committed"):
        if not await conn.fetchval(_LOCK_SQL, FEED_LOCK_KEY):
            return FeedRound(0, 0, locked_out=True)
        cursor = await conn.fetchrow(_CURSOR_SQL, CURSOR_NAME)
        assert cursor is not None, "sql/0009 creates the cursor"
        if cursor["ahead"]:
            # Every new event would sort behind the cursor and never be delivered: refuse, loudly.
            raise FeedCursorAheadError(
                f"the outbox cursor (xid {cursor['xid']}) is ahead of this cluster's transactions; after a restore"
                " from a dump, reset it (README: the outbox feed)"
            )
        position = (cursor["xid"], cursor["intent_id"], cursor["version"])
        rows = await conn.fetch(_EVENTS_SQL, *position, FEED_BATCH_MAX)
        if not rows:
            oldest = await conn.fetchval(_OLDEST_SQL, *position)
            held_s = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
            metrics.OUTBOX_FEED_DELAY_SECONDS.set(max(held_s, 0.0))
            return FeedRound(0, 0)
        final_ids = [row["intent_id"] for row in rows if row["state"] in TERMINAL_STATE_NAMES]
        # A final state is an intent's last transition, so its row as it is now is as it ended.
        finals = await load_intents(conn, final_ids) if final_ids else []
        assert len(finals) == len(set(final_ids)), "an event row's intent exists (foreign key)"
        await streams.publish_and_add(
            redis, [_status_message(topology, row) for row in rows], topology.final_stage.stream,
            [streams.entry_fields(intent) for intent in finals],
        )  # fmt: skip
        last = rows[-1]
        await conn.execute(_MOVE_SQL, CURSOR_NAME, last["xid_text"], last["intent_id"], last["version"])
    oldest_s = (datetime.now(UTC) - rows[0]["created_at"]).total_seconds()
    metrics.OUTBOX_FEED_DELAY_SECONDS.set(max(oldest_s, 0.0))
    metrics.OUTBOX_DELIVERED.labels("status").inc(len(rows))
    return FeedRound(len(rows), len(finals))


def _status_message(topology: Topology, row: asyncpg.Record) -> tuple[str, bytes]:
    """(channel, payload) of one event row; per message, so built from the row without objects."""
    intent_id = str(row["intent_id"])
    message = event_message(
        intent_id, row["version"], row["state"], row["error_code"], row["error_message"], row["created_at"]
    )
    return topology.channel_for(intent_id), orjson.dumps(message)


async def delivered(conn: asyncpg.Pool | asyncpg.Connection, intent_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these intents are final with their final event behind the cursor (status published) and
    `finished` (history written by the history stage, limit places given back): what tests and the
    benchmark wait for."""
    rows = await conn.fetch(
        "SELECT e.intent_id FROM pm.intent_event e JOIN pm.intent i ON i.id = e.intent_id AND i.version = e.version"
        " JOIN pm.outbox_cursor c ON c.name = $2"
        " WHERE e.intent_id = ANY($1::uuid[]) AND i.state = ANY($3::text[]) AND i.finished"
        " AND (e.xid, e.intent_id, e.version) <= (c.xid, c.intent_id, c.version)",
        intent_ids,
        CURSOR_NAME,
        list(TERMINAL_STATE_NAMES),
    )
    return {row["intent_id"] for row in rows}
