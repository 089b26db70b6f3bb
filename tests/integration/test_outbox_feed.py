"""The outbox worker's feed on real PostgreSQL and Valkey: every committed transition becomes one status
message on `intent.{id}` (in version order, with a derived event id), a final one also an entry on the
history stage's stream, whose stage writes the users' history rows (once) and finishes it; a transaction
still open holds later events back instead of letting them be skipped; a failed round delivers nothing
and loses nothing; one worker feeds at a time; the upgrade strands nothing; a feed held back says so, and
a cursor ahead of the cluster (a restored dump) is refused."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import uuid

import asyncpg
import orjson
import pytest
from redis.exceptions import RedisError

from consumers import outbox_feed
from consumers.context import StageContext
from consumers.outbox import run_outbox
from consumers.runtime import StageRunner
from pm.config import metrics
from pm.domain.intent import OperationType, State, Transition
from pm.redis import streams
from pm.redis.wire import redis_from_url
from pm.store import intents as store
from pm.store.migrate import MIGRATIONS_DIR, migrate

PATH = [State.CREATED, State.VALIDATED, State.PRICED, State.CLEARED, State.AUTHORIZED, State.SETTLED]


async def created(pool, operation_type=OperationType.P2P_TRANSFER, sender=1001, recipient=1002, merchant=None):
    outcome = await store.create_intent(
        pool, api_key_id="feed-test", idempotency_key=uuid.uuid4().hex, request_hash=b"h",
        operation_type=operation_type, amount_minor=10_000, currency="THB", sender_id=sender, recipient_id=recipient,
        operator_id=None, merchant_id=merchant,
    )  # fmt: skip
    assert outcome.created is not None
    return outcome.created.id


async def created_before_the_upgrade(pool) -> uuid.UUID:
    """`created` on a database of an older checkout: the intent row and its first event, as written then
    (today's statement also claims nonces and per-user idempotency records, tables that come later)."""
    intent_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO pm.intent (id, state, version, operation_type, amount_minor, currency, sender_id, recipient_id,"
        " api_key_id, idempotency_key) VALUES ($1, 'CREATED', 1, 'P2P_TRANSFER', 10000, 'THB', 1001, 1002,"
        " 'feed-test', $2)",
        intent_id, uuid.uuid4().hex,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO pm.intent_event (intent_id, version, state, created_at)"
        " SELECT id, version, state, created_at FROM pm.intent WHERE id = $1",
        intent_id,
    )
    return intent_id


async def walk(conn, intent_id: uuid.UUID, states: list[State]) -> None:
    for expected, new in itertools.pairwise(states):
        fees = {"fee_pre_minor": 150, "fee_post_minor": 40} if new == State.PRICED else {}
        error = {"error_code": "PSP_DECLINED"} if new in (State.FAILED, State.REJECTED) else {}
        (result,) = await store.apply_transitions(conn, [Transition(intent_id, expected, new, **fees, **error)])
        assert result.applied


async def walk_before_the_upgrade(conn, intent_id: uuid.UUID, states: list[State]) -> None:
    """`walk` as an older checkout's stages wrote it (today's statement returns columns that come later)."""
    for expected, new in itertools.pairwise(states):
        error = "PSP_DECLINED" if new in (State.FAILED, State.REJECTED) else None
        applied = await conn.fetchval(
            "WITH updated AS (UPDATE pm.intent SET state = $3, version = version + 1, error_code = $4,"
            " updated_at = clock_timestamp() WHERE id = $1 AND state = $2 RETURNING *),"
            " event AS (INSERT INTO pm.intent_event (intent_id, version, state, error_code, created_at)"
            " SELECT id, version, state, error_code, updated_at FROM updated)"
            " SELECT count(*) FROM updated",
            intent_id, str(expected), str(new), error,
        )  # fmt: skip
        assert applied == 1


class Listener:
    def __init__(self, redis, topology, intent_ids):
        self.pubsub = redis.pubsub()
        self.channels = [topology.channel_for(i) for i in intent_ids]

    async def __aenter__(self):
        await self.pubsub.subscribe(*self.channels)
        for _ in self.channels:
            await self.pubsub.get_message(timeout=1)
        return self

    async def __aexit__(self, *exc):
        await self.pubsub.aclose()

    async def take(self, count: int) -> list[dict]:
        got = []
        while len(got) < count:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            assert message is not None, f"{len(got)} of {count} messages arrived: {got}"
            got.append(orjson.loads(message["data"]))
        assert await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None, "one too many"
        return got


async def end_finals(pool, redis, topology) -> int:
    """The history stage's part, as `pm run history` does it: one batch of what the feed added to its
    stream, handled and acknowledged; how many entries it took."""
    stage = topology.final_stage
    await streams.ensure_groups(redis, topology)
    read = await redis.xreadgroup(stage.group, "feed-test", {stage.stream: ">"}, count=1_000)
    entries = [entry for _, batch in read for entry in batch]
    if entries:
        context = StageContext(pool=pool, ledger=None, redis=redis, topology=topology)  # type: ignore[arg-type]
        outcome = await StageRunner(stage, context).process(entries)
        assert (outcome.failed, outcome.malformed) == (0, 0), outcome
    assert (await redis.xpending(stage.stream, stage.group))["pending"] == 0
    return len(entries)


async def history(pool, intent_id):
    rows = await pool.fetch(
        "SELECT user_id, direction, amount_minor, fee_minor, state FROM pm.history"
        " WHERE intent_id = $1 ORDER BY user_id",
        intent_id,
    )
    return [tuple(row) for row in rows]


async def test_every_transition_is_published_in_order_and_a_final_one_writes_history_once(
    pool, redis, topology
) -> None:
    intent_id = await created(pool)
    await walk(pool, intent_id, PATH)
    async with Listener(redis, topology, [intent_id]) as listener:
        assert await outbox_feed.feed_once(pool, redis, topology) == outbox_feed.FeedRound(6, 1)
        messages = await listener.take(6)
        assert [(m["version"], m["state"]) for m in messages] == [(v, str(s)) for v, s in enumerate(PATH, 1)]
        assert [m["event_id"] for m in messages] == [str(store.event_id(intent_id, v)) for v in range(1, 7)]
        assert {m["intent_id"] for m in messages} == {str(intent_id)}
        # Published, not yet ended: the history stage has its entry.
        assert await history(pool, intent_id) == []
        assert await outbox_feed.delivered(pool, [intent_id]) == set()
        assert await end_finals(pool, redis, topology) == 1
        assert await history(pool, intent_id) == [
            (1001, "DEBIT", 10_150, 150, "SETTLED"),
            (1002, "CREDIT", 9_960, 40, "SETTLED"),
        ]
        assert await outbox_feed.delivered(pool, [intent_id]) == {intent_id}
        assert await outbox_feed.feed_once(pool, redis, topology) == outbox_feed.FeedRound(0, 0)

        # As after a crash before the cursor committed: the same messages again, same event ids, and the
        # intent on the history stream again; the history is not written twice.
        await pool.execute(
            "UPDATE pm.outbox_cursor SET xid = '0', intent_id = '00000000-0000-0000-0000-000000000000', version = 0"
        )
        assert await outbox_feed.feed_once(pool, redis, topology) == outbox_feed.FeedRound(6, 1)
        again = await listener.take(6)
        assert [m["event_id"] for m in again] == [m["event_id"] for m in messages]
        assert await end_finals(pool, redis, topology) == 1
        assert len(await history(pool, intent_id)) == 2


async def test_an_open_transaction_holds_later_events_back_and_none_is_skipped(pool, redis, topology) -> None:
    early, late = await created(pool), await created(pool)
    assert (await outbox_feed.feed_once(pool, redis, topology)).events == 2  # both CREATED
    async with pool.acquire() as open_conn:
        transaction = open_conn.transaction()
        await transaction.start()
        await walk(open_conn, early, PATH[:2])  # early's VALIDATED: written, not committed yet
        await walk(pool, late, PATH[:2])  # late's VALIDATED: committed, by a later transaction
        # The feed cannot know what the open transaction will commit: it waits rather than skip past it.
        assert (await outbox_feed.feed_once(pool, redis, topology)).events == 0
        await transaction.commit()
    async with Listener(redis, topology, [early, late]) as listener:
        assert (await outbox_feed.feed_once(pool, redis, topology)).events == 2
        messages = await listener.take(2)
    assert [(m["intent_id"], m["state"]) for m in messages] == [(str(early), "VALIDATED"), (str(late), "VALIDATED")]


async def test_a_round_that_cannot_publish_moves_nothing(pool, redis, topology) -> None:
    intent_id = await created(pool)
    await walk(pool, intent_id, [*PATH[:5], State.FAILED])
    unreachable = redis_from_url("redis://127.0.0.1:1", socket_connect_timeout=1)
    with pytest.raises(RedisError):
        await outbox_feed.feed_once(pool, unreachable, topology)
    await unreachable.aclose()
    assert await end_finals(pool, redis, topology) == 0  # nothing reached the history stream either
    assert await history(pool, intent_id) == []
    assert await outbox_feed.delivered(pool, [intent_id]) == set()
    async with Listener(redis, topology, [intent_id]) as listener:
        assert await outbox_feed.feed_once(pool, redis, topology) == outbox_feed.FeedRound(6, 1)
        assert [m["state"] for m in await listener.take(6)][-1] == "FAILED"
    assert await end_finals(pool, redis, topology) == 1
    assert await history(pool, intent_id) == [(1001, "DEBIT", 0, 0, "FAILED")]


async def test_one_worker_feeds_at_a_time(pool, redis, topology) -> None:
    await created(pool)
    async with pool.acquire() as other, other.transaction():
        await other.execute("SELECT pg_advisory_xact_lock($1)", outbox_feed.FEED_LOCK_KEY)
        assert await outbox_feed.feed_once(pool, redis, topology) == outbox_feed.FeedRound(0, 0, locked_out=True)
    results = await asyncio.gather(*(outbox_feed.feed_once(pool, redis, topology) for _ in range(3)))
    assert sum(r.events for r in results) == 1  # whoever held the lock delivered it; the others stood by


async def test_history_names_the_merchant_and_shows_a_failed_top_up(pool, redis, topology) -> None:
    charge = await created(pool, OperationType.MINIAPP_CHARGE, sender=1001, recipient=None, merchant=77)
    await walk(pool, charge, PATH)
    topup = await created(pool, OperationType.QP_TOPUP, sender=None, recipient=1001)
    await walk(pool, topup, [*PATH[:5], State.FAILED])
    credit = await created(pool, OperationType.MINIAPP_CREDIT, sender=None, recipient=1001, merchant=77)
    await walk(pool, credit, [State.CREATED, State.REJECTED])
    assert (await outbox_feed.feed_once(pool, redis, topology)).finals == 3
    assert await end_finals(pool, redis, topology) == 3
    finished = await pool.fetch("SELECT id FROM pm.intent WHERE finished")
    assert {row["id"] for row in finished} == {charge, topup, credit}  # the credit too, with no row to show
    rows = await pool.fetch("SELECT intent_id, direction, amount_minor, merchant_id, state FROM pm.history")
    shown = sorted((r["intent_id"], r["direction"], r["amount_minor"], r["merchant_id"], r["state"]) for r in rows)
    assert shown == sorted([(charge, "DEBIT", 10_150, 77, "SETTLED"), (topup, "CREDIT", 0, None, "FAILED")])


async def test_the_upgrade_delivers_what_the_history_stage_left_and_nothing_it_did(
    fresh_database, redis, topology, tmp_path
) -> None:
    """Intents already final when sql/0009 runs: those the old history stage had finished stay behind
    the cursor; those it had not are delivered by the feed (to the history stage: history written, finished)."""
    url = await fresh_database()
    before = tmp_path / "sql"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < "0009":
            shutil.copy(path, before / path.name)
    await migrate(url, before)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        done, stranded, open_ = [await created_before_the_upgrade(pool) for _ in range(3)]
        for intent_id in (done, stranded):
            await walk_before_the_upgrade(pool, intent_id, PATH)
        await walk_before_the_upgrade(pool, open_, PATH[:5])  # AUTHORIZED: its end is still to come
        await pool.execute("UPDATE pm.intent SET history_written = true WHERE id = $1", done)
        await migrate(url)  # sql/0009
        assert await outbox_feed.feed_once(pool, redis, topology) == outbox_feed.FeedRound(1, 1)
        assert await end_finals(pool, redis, topology) == 1
        assert await history(pool, done) == []  # the old stage had written it: not written again here
        assert len(await history(pool, stranded)) == 2
        assert await outbox_feed.delivered(pool, [done, stranded, open_]) == {done, stranded}  # done: by the old stages
        await walk(pool, open_, PATH[4:])
        assert await outbox_feed.feed_once(pool, redis, topology) == outbox_feed.FeedRound(1, 1)
        assert await end_finals(pool, redis, topology) == 1
        finished = await pool.fetch("SELECT id FROM pm.intent WHERE finished")
        assert {row["id"] for row in finished} == {done, stranded, open_}
    finally:
        await pool.close()


async def test_a_held_back_feed_shows_its_delay_and_a_restored_cursor_ahead_is_refused(pool, redis, topology) -> None:
    intent_id = await created(pool)
    assert (await outbox_feed.feed_once(pool, redis, topology)).events == 1
    async with pool.acquire() as open_conn, open_conn.transaction():
        await open_conn.execute("SELECT pg_current_xact_id()")  # an older transaction, still open
        await walk(pool, intent_id, PATH[:2])
        await asyncio.sleep(0.2)
        assert (await outbox_feed.feed_once(pool, redis, topology)).events == 0
        assert metrics.OUTBOX_FEED_DELAY_SECONDS._value.get() >= 0.2  # held back, and it shows
    assert (await outbox_feed.feed_once(pool, redis, topology)).events == 1
    assert (await outbox_feed.feed_once(pool, redis, topology)).events == 0
    assert metrics.OUTBOX_FEED_DELAY_SECONDS._value.get() == 0

    # As after a restore from a dump into a cluster whose transaction ids are lower than the cursor's.
    await pool.execute("UPDATE pm.outbox_cursor SET xid = '999999999999'")
    with pytest.raises(outbox_feed.FeedCursorAheadError, match="reset it"):
        await outbox_feed.feed_once(pool, redis, topology)


async def test_the_worker_outlives_failed_rounds_and_delivers_once_redis_is_back(pool, redis, topology) -> None:
    """Redis away: every feed round fails, is counted and retried, and the worker keeps running; with Redis
    back, the same events are delivered (nothing was skipped)."""
    intent_id = await created(pool)
    failures_before = metrics.OUTBOX_FEED_FAILURES._value.get()
    unreachable = redis_from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_outbox(pool, unreachable, topology, stop))
    await asyncio.sleep(1.5)
    assert not worker.done()
    stop.set()
    await asyncio.wait_for(worker, 10)
    await unreachable.aclose()
    assert metrics.OUTBOX_FEED_FAILURES._value.get() > failures_before
    async with Listener(redis, topology, [intent_id]) as listener:
        # The cursor did not move past the undelivered event: it goes out now.
        assert (await outbox_feed.feed_once(pool, redis, topology)).events == 1
        assert [m["state"] for m in await listener.take(1)] == ["CREATED"]
