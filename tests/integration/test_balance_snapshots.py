"""Balance snapshots on real PostgreSQL, Valkey and the postgres ledger, after payments through the stages:
the snapshot equals the ledger account by account (counters, and posted, pending and available as
GET /api/pm/balance computes them, users and merchants named from their intents); taking it twice changes
only taken_at; a snapshot in bounded pages goes on where its last run stopped; a snapshot paused in the
middle holds no lock and no transaction while a payment settles, and one held out of its way by locks on
its own rows blocks no payment; the poller's run counts a failure and exports its metrics, and the poller
snapshots on its period (PM_BALANCE_SNAPSHOT_INTERVAL_S), never at 0; name lookups are bounded per run,
and a name once stored is kept."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import tigerbeetle as tb
from prometheus_client import REGISTRY

import channels
from consumers.balance_snapshot import Snapshots, snapshot_once, take_snapshot
from ledger import accounts, open_ledger
from ledger.check import all_accounts, run_check
from pm.domain.intent import OperationType, State
from pm.store.balance_snapshots import SnapshotRow, write_page
from pm.store.migrate import migrate
from tests.support.pipeline import Pipeline, isolated_topology, open_pipeline, transfers_in_ledger

P2P = OperationType.P2P_TRANSFER
ALICE, BOB, CAROL = 81_001, 81_002, 81_003
HELD_MINOR = 700


def sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {})


async def snapshot_rows(pool: asyncpg.Pool) -> dict[int, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM pm.account_balance_snapshot ORDER BY account_id")
    return {int(row["account_id"]): dict(row) for row in rows}


async def pay_and_hold(pipeline: Pipeline) -> None:
    """Alice funded with 50,000, pays Bob 12,345 through the stages, and has a hold of HELD_MINOR for Carol
    in flight (authorized, not settled: money pending in transit)."""
    async with pipeline.stages():
        await pipeline.wait_finished([(await pipeline.fund(ALICE, 50_000)).id])
        await pipeline.wait_finished([(await pipeline.submit(P2P, 12_345, ALICE, BOB)).id])
    held = await pipeline.submit(P2P, HELD_MINOR, ALICE, CAROL, publish=False)
    await pipeline.context.pool.execute(
        "UPDATE pm.intent SET state = 'AUTHORIZED', channel = 'INTERNAL_P2P', version = 5 WHERE id = $1", held.id
    )
    p2p = channels.REGISTRY["INTERNAL_P2P"]
    # Carol's account, as validation makes it: it has not moved yet.
    results = await pipeline.context.ledger.create_accounts([accounts.user(CAROL, "THB").to_tigerbeetle()])
    assert [r.status for r in results] == [tb.CreateAccountStatus.CREATED]
    results = await pipeline.context.ledger.create_transfers(p2p.authorize(held))
    assert [r.status for r in results] == [tb.CreateTransferStatus.CREATED]


def assert_matches_ledger(rows: dict[int, dict[str, Any]], ledger_accounts: list[tb.Account]) -> None:
    """Every ledger account has its row, with its counters and the balances the gateway would answer."""
    assert set(rows) == {account.id for account in ledger_accounts}
    for account in ledger_accounts:
        row = rows[account.id]
        counters = (row["debits_pending"], row["debits_posted"], row["credits_pending"], row["credits_posted"])
        assert counters == (account.debits_pending, account.debits_posted, account.credits_pending,
                            account.credits_posted), account.id  # fmt: skip
        posted_minor = account.credits_posted - account.debits_posted
        assert row["posted_minor"] == posted_minor
        assert row["pending_minor"] == account.debits_pending
        assert row["available_minor"] == posted_minor - account.debits_pending
        assert (row["ledger"], row["code"], row["currency"]) == (account.ledger, account.code, "THB")
        assert row["ledger_timestamp"] >= account.timestamp


async def test_the_snapshot_equals_the_ledger_account_by_account(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        await pay_and_hold(pipeline)
        ledger = pipeline.context.ledger
        run = await take_snapshot(ledger, pipeline.context.pool)
        ledger_accounts = await all_accounts(ledger)
        rows = await snapshot_rows(pipeline.context.pool)

        assert (run.accounts, run.pages, run.complete) == (len(ledger_accounts), 1, True)
        assert_matches_ledger(rows, ledger_accounts)
        by_name = {row["name"]: row for row in rows.values()}
        # Carol's account never moved: no transfer names it yet (its balances are there all the same).
        assert set(by_name) == {"user:81001:THB", "user:81002:THB", "transit:THB", "adjustments:THB", "fees:THB",
                                None}  # fmt: skip
        carol = rows[accounts.user(CAROL, "THB").id]
        assert (carol["name"], carol["kind"], carol["user_id"], carol["available_minor"]) == (None, "user", None, 0)
        alice, bob = (by_name[f"user:{user}:THB"] for user in (ALICE, BOB))
        assert (alice["kind"], alice["user_id"], alice["merchant_id"]) == ("user", ALICE, None)
        assert (alice["posted_minor"], alice["pending_minor"], alice["available_minor"]) == (
            50_000 - 12_345, HELD_MINOR, 50_000 - 12_345 - HELD_MINOR,
        )  # fmt: skip
        assert (bob["user_id"], bob["posted_minor"], bob["available_minor"]) == (BOB, 12_345, 12_345)
        transit = by_name["transit:THB"]
        assert (transit["kind"], transit["posted_minor"], transit["credits_pending"]) == ("transit", 0, HELD_MINOR)
        # The ledger's invariants, read from the snapshot alone: debits = credits, posted and pending.
        assert sum(row["posted_minor"] for row in rows.values()) == 0
        assert sum(row["credits_pending"] - row["debits_pending"] for row in rows.values()) == 0
        assert (await run_check(ledger, allow_pending_transit=True)).ok


async def test_taking_it_twice_changes_only_taken_at(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        await pay_and_hold(pipeline)
        pool = pipeline.context.pool
        await take_snapshot(pipeline.context.ledger, pool)
        first = await snapshot_rows(pool)
        await take_snapshot(pipeline.context.ledger, pool)
        second = await snapshot_rows(pool)

        assert set(first) == set(second) and len(first) == 6
        for account_id, row in first.items():
            again = second[account_id]
            assert again["taken_at"] > row["taken_at"]
            assert {**again, "taken_at": None} == {**row, "taken_at": None}


async def test_a_paged_snapshot_goes_on_where_its_run_stopped(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        await pay_and_hold(pipeline)
        ledger, pool = pipeline.context.ledger, pipeline.context.pool
        ledger_accounts = await all_accounts(ledger)  # 6: three users, transit, adjustments, fees
        first = await take_snapshot(ledger, pool, page_accounts=2, pages_max=2)
        assert (first.accounts, first.pages, first.complete) == (4, 2, False)
        assert len(await snapshot_rows(pool)) == 4
        rest = await take_snapshot(ledger, pool, timestamp_min=first.resume_timestamp_min, page_accounts=2)
        # The third page is full (2 accounts), so a fourth, empty one tells the ledger has no more.
        assert (rest.accounts, rest.pages, rest.complete) == (2, 2, True)
        assert_matches_ledger(await snapshot_rows(pool), ledger_accounts)


class PausingLedger:
    """The ledger, with the first `query_accounts` held after its answer until `resume` is set: a snapshot
    stopped in the middle of its run."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def query_accounts(self, f: tb.QueryFilter) -> list[tb.Account]:
        page = await self._ledger.query_accounts(f)
        if not self.paused.is_set():
            self.paused.set()
            await self.resume.wait()
        return page


SNAPSHOT_APPLICATION = f"snapshot-{uuid.uuid4().hex[:8]}"
# Locks on PM's and the ledger's tables held by the snapshot's own connections (database and ledger).
_SNAPSHOT_LOCKS_SQL = """
SELECT a.pid, a.state, n.nspname || '.' || c.relname AS relation, l.mode
FROM pg_stat_activity a
LEFT JOIN pg_locks l ON l.pid = a.pid AND l.relation IS NOT NULL
LEFT JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.application_name = $1
"""


@contextlib.asynccontextmanager
async def snapshot_connections(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, Any]]:
    """A pool and a ledger of their own, named in pg_stat_activity, for the snapshot under test."""
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, server_settings={"application_name": SNAPSHOT_APPLICATION}
    )
    separator = "&" if "?" in database_url else "?"
    try:
        async with open_ledger(f"{database_url}{separator}application_name={SNAPSHOT_APPLICATION}") as ledger:
            yield pool, ledger
    finally:
        await pool.close()


async def test_a_snapshot_in_the_middle_holds_no_lock_the_pipeline_waits_for(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        await pipeline.wait_finished([(await pipeline.fund(ALICE, 10_000)).id])
        async with snapshot_connections(pipeline.database_url) as (pool, ledger):
            pausing = PausingLedger(ledger)
            snapshot = asyncio.create_task(take_snapshot(pausing, pool, page_accounts=2))
            await asyncio.wait_for(pausing.paused.wait(), 10)
            sessions = await pipeline.context.pool.fetch(_SNAPSHOT_LOCKS_SQL, SNAPSHOT_APPLICATION)
            assert sessions, "the snapshot's connections are open"
            # Between statements: no transaction left open, no lock on any table.
            assert {row["state"] for row in sessions} <= {"idle"}, sessions
            assert [row["relation"] for row in sessions if row["relation"]] == [], sessions

            started_s = time.monotonic()
            payment = await pipeline.submit(P2P, 2_500, ALICE, BOB)
            settled = (await pipeline.wait_finished([payment.id], timeout_s=20))[payment.id]
            assert settled.state == State.SETTLED and time.monotonic() - started_s < 20
            assert not snapshot.done()  # the payment settled while the snapshot was in its middle

            pausing.resume.set()
            run = await asyncio.wait_for(snapshot, 20)
        assert run.complete
        # The page read before the payment (the two oldest accounts: adjustments and transit, made with the
        # funding) shows the balances before it, and says so: its ledger_timestamp is before the payment's
        # transfers. The next snapshot has the payment.
        ledger_accounts = await all_accounts(pipeline.context.ledger)
        paid_at = min(t.timestamp for t in await transfers_in_ledger(pipeline, payment))
        rows = await snapshot_rows(pipeline.context.pool)
        stale = [a for a in ledger_accounts if rows[a.id]["debits_posted"] != a.debits_posted
                 or rows[a.id]["credits_posted"] != a.credits_posted]  # fmt: skip
        assert stale and all(rows[a.id]["ledger_timestamp"] < paid_at for a in stale), stale
        await take_snapshot(pipeline.context.ledger, pipeline.context.pool)
        assert_matches_ledger(await snapshot_rows(pipeline.context.pool), ledger_accounts)


async def test_locks_on_the_snapshot_rows_block_no_payment(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        await pipeline.wait_finished([(await pipeline.fund(ALICE, 10_000)).id])
        await take_snapshot(pipeline.context.ledger, pipeline.context.pool)
        blocker = await asyncpg.connect(pipeline.database_url)
        try:
            async with blocker.transaction():
                # What a snapshot's upsert holds at most, held for the whole payment: every row of its table.
                await blocker.execute("LOCK TABLE pm.account_balance_snapshot IN ACCESS EXCLUSIVE MODE")
                payment = await pipeline.submit(P2P, 1_000, ALICE, BOB)
                # The stages' own work; the outbox feed waits for the blocker's transaction (it has an xid:
                # a feed delivers only what committed before every transaction still open).
                assert await settled_within(pipeline.context.pool, payment.id, 20)
        finally:
            await blocker.close()
        await pipeline.wait_finished([payment.id])
        assert await pipeline.balance(BOB) == (1_000, 0)
        assert (await pipeline.check()).ok


async def settled_within(pool: asyncpg.Pool, intent_id: uuid.UUID, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await pool.fetchval("SELECT state FROM pm.intent WHERE id = $1", intent_id) == "SETTLED":
            return True
        await asyncio.sleep(0.05)
    return False


class BrokenLedger:
    async def query_transfers(self, f: tb.QueryFilter) -> list[tb.Transfer]:
        raise ConnectionError("the ledger is away")


async def test_the_poller_run_exports_its_metrics_and_counts_a_failure(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        await pay_and_hold(pipeline)
        failures = sample("pm_balance_snapshot_failures_total") or 0
        snapshots = Snapshots()
        assert await snapshot_once(BrokenLedger(), pipeline.context.pool, snapshots) is None  # type: ignore[arg-type]
        assert sample("pm_balance_snapshot_failures_total") == failures + 1

        before_s = time.time()
        run = await snapshot_once(pipeline.context.ledger, pipeline.context.pool, snapshots, pages_max=1)
        assert run is not None and run.complete  # one page of 4,096 holds this ledger
        assert sample("pm_balance_snapshot_accounts") == 6
        assert (sample("pm_balance_snapshot_timestamp_seconds") or 0) >= before_s


async def test_the_poller_snapshots_on_its_period_and_not_at_0(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        async with pipeline.stages():  # every intent final: the poller has nothing to re-drive
            await pipeline.wait_finished([(await pipeline.fund(ALICE, 5_000)).id])
            await pipeline.wait_finished([(await pipeline.submit(P2P, 1_500, ALICE, BOB)).id])
        pool = pipeline.context.pool
        accounts_count = len(await all_accounts(pipeline.context.ledger))
        pipeline.context.balance_snapshot_interval_s = 0
        async with pipeline.stages(with_poller=True, with_outbox=False):
            await asyncio.sleep(2.5)  # two poller rounds and more (interval_ms: 1 s)
        assert await snapshot_rows(pool) == {}

        pipeline.context.balance_snapshot_interval_s = 1
        async with pipeline.stages(with_poller=True, with_outbox=False):
            deadline = time.monotonic() + 15
            while len(rows := await snapshot_rows(pool)) < accounts_count:
                assert time.monotonic() < deadline, "the poller wrote no snapshot"
                await asyncio.sleep(0.1)
            first_taken_at = max(row["taken_at"] for row in rows.values())
            while min(row["taken_at"] for row in (await snapshot_rows(pool)).values()) <= first_taken_at:
                assert time.monotonic() < deadline, "the poller took no second snapshot"
                await asyncio.sleep(0.1)
        assert_matches_ledger(await snapshot_rows(pool), await all_accounts(pipeline.context.ledger))


async def test_name_lookups_are_bounded_per_run_and_names_are_kept(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        await pay_and_hold(pipeline)
        ledger, pool = pipeline.context.ledger, pipeline.context.pool
        users = {accounts.user(user, "THB").id: user for user in (ALICE, BOB)}  # Carol never moved
        first = await take_snapshot(ledger, pool, name_lookups_max=1)
        assert (first.name_lookups, first.named) == (1, 1)
        named = {account_id for account_id, row in (await snapshot_rows(pool)).items() if row["user_id"]}
        assert len(named) == 1 and named < set(users)
        second = await take_snapshot(ledger, pool, name_lookups_max=1)
        assert (second.name_lookups, second.named) == (1, 1)  # the other one: the first keeps its name
        third = await take_snapshot(ledger, pool)
        assert (third.name_lookups, third.named) == (0, 0)  # Carol's account has nothing to be named from
        rows = await snapshot_rows(pool)
        assert {account_id: rows[account_id]["user_id"] for account_id in users} == users


async def test_an_older_read_never_replaces_a_newer_one(fresh_database) -> None:
    """Two takers of one page (two pollers, or `pm balances snapshot --take` beside one): whichever writes
    last, the row keeps the balances read at the later ledger timestamp."""
    database_url = await fresh_database()
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        def read_at(ledger_timestamp: int, credits_posted: int) -> SnapshotRow:
            return SnapshotRow(account_id=9_001, ledger=1, currency="THB", code=1, kind="user", name=None,
                               user_id=None, merchant_id=None, debits_pending=0, debits_posted=0,
                               credits_pending=0, credits_posted=credits_posted,
                               ledger_timestamp=ledger_timestamp)  # fmt: skip

        await write_page(pool, [read_at(2_000, 500)])  # the later read writes first
        await write_page(pool, [read_at(1_000, 100)])  # the earlier read writes last
        row = await pool.fetchrow("SELECT * FROM pm.account_balance_snapshot WHERE account_id = 9001")
        assert (row["ledger_timestamp"], row["credits_posted"], row["posted_minor"]) == (2_000, 500, 500)
        await write_page(pool, [read_at(3_000, 700)])  # a newer read still lands
        row = await pool.fetchrow("SELECT * FROM pm.account_balance_snapshot WHERE account_id = 9001")
        assert (row["ledger_timestamp"], row["credits_posted"]) == (3_000, 700)
    finally:
        await pool.close()


async def test_a_snapshot_that_takes_long_holds_no_re_drive_back(fresh_database, redis_url, monkeypatch) -> None:
    """The poller's reports run beside its rounds: while a snapshot hangs (a large ledger, a slow read), an
    intent whose stream entry was lost is still re-driven and settles."""
    started = asyncio.Event()

    async def hanging_snapshot(*args: object) -> None:
        started.set()
        await asyncio.Event().wait()  # until cancelled with the poller

    monkeypatch.setattr("consumers.poller.snapshot_once", hanging_snapshot)
    async with open_pipeline(fresh_database, redis_url, isolated_topology(stuck_after_s=1)) as pipeline:
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(ALICE, 5_000)).id])
        pipeline.context.balance_snapshot_interval_s = 1
        async with pipeline.stages(with_poller=True):
            await asyncio.wait_for(started.wait(), timeout=10)
            lost = await pipeline.submit(P2P, 1_200, ALICE, BOB, publish=False)  # its entry never published
            await pipeline.wait_finished([lost.id], timeout_s=30)
        assert await pipeline.balance(ALICE) == (5_000 - 1_200, 0)
        assert await pipeline.balance(BOB) == (1_200, 0)
        report = await run_check(pipeline.context.ledger)
        assert report.ok, report.problems
