"""The postgres ledger backend on a real PostgreSQL: it creates its own tables in an empty database,
keeps its data across connections, stays exact when several processes write to the same accounts
at once (every created transfer is reflected once, no account overdraws, debits = credits), and its
ledger check on more than one page of accounts neither reports a transfer committed between two page
reads as an imbalance nor misses a real one (a row changed behind the ledger's back)."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import uuid
from collections import defaultdict

import asyncpg
import tigerbeetle as tb

from ledger import open_ledger
from ledger.check import run_check
from tests.support.ledger_check import THB, BetweenPages, create_ok, thb_transfer, two_page_ledger

LEDGER_NUMBER = 4242
PROCESSES = 3
BATCHES_PER_PROCESS = 40
BATCH_SIZE = 50


async def test_creates_its_tables_in_an_empty_database(fresh_database) -> None:
    url = await fresh_database()
    async with open_ledger(url) as ledger:
        results = await ledger.create_accounts([tb.Account(id=1, ledger=LEDGER_NUMBER, code=1)])
        assert results[0].status == tb.CreateAccountStatus.CREATED
    connection = await asyncpg.connect(url)
    try:
        tables = {
            r[0] for r in await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'tb_ledger'")
        }
    finally:
        await connection.close()
    assert {"cluster", "accounts", "transfers", "orphan_transfer_ids"} <= tables


async def test_opening_twice_at_once_and_reopening_keeps_the_data(fresh_database) -> None:
    url = await fresh_database()

    async def open_and_create(account_id: int) -> tb.CreateAccountStatus:
        async with open_ledger(url) as ledger:
            results = await ledger.create_accounts([tb.Account(id=account_id, ledger=LEDGER_NUMBER, code=1)])
            return results[0].status

    statuses = await asyncio.gather(open_and_create(10), open_and_create(11))
    assert statuses == [tb.CreateAccountStatus.CREATED] * 2
    async with open_ledger(url) as ledger:
        transfer = tb.Transfer(id=99, debit_account_id=10, credit_account_id=11, amount=5, ledger=LEDGER_NUMBER, code=1)
        assert (await ledger.create_transfers([transfer]))[0].status == tb.CreateTransferStatus.CREATED
    async with open_ledger(url) as ledger:
        found = await ledger.lookup_accounts([10, 11])
        assert [(a.debits_posted, a.credits_posted) for a in found] == [(5, 0), (0, 5)]
        assert (await ledger.create_transfers([transfer]))[0].status == tb.CreateTransferStatus.EXISTS


def _writer(url: str, account_ids: list[int], seed: int) -> list[tuple[int, int, int, int, str]]:
    """One writer process: random transfers and linked pairs, each batch sent twice (a retry)."""

    async def run() -> list[tuple[int, int, int, int, str]]:
        rng = random.Random(seed)
        outcomes = []
        async with open_ledger(url) as ledger:
            for _ in range(BATCHES_PER_PROCESS):
                batch = []
                while len(batch) < BATCH_SIZE:
                    debit, credit = rng.sample(account_ids, 2)
                    linked = rng.random() < 0.2
                    batch.append(
                        tb.Transfer(
                            id=tb.id(),
                            debit_account_id=debit,
                            credit_account_id=credit,
                            amount=rng.randint(1, 400),
                            ledger=LEDGER_NUMBER,
                            code=1,
                            flags=tb.TransferFlags.LINKED if linked else tb.TransferFlags.NONE,
                        )
                    )
                batch[-1].flags = tb.TransferFlags.NONE  # close any open chain
                first = await ledger.create_transfers(batch)
                retry = await ledger.create_transfers(batch)
                for transfer, result, again in zip(batch, first, retry, strict=True):
                    if result.status == tb.CreateTransferStatus.CREATED:
                        # A created transfer is found on retry (the first of a chain as `exists`).
                        assert again.status in (
                            tb.CreateTransferStatus.EXISTS,
                            tb.CreateTransferStatus.LINKED_EVENT_FAILED,
                        )
                    outcomes.append(
                        (
                            transfer.id,
                            transfer.debit_account_id,
                            transfer.credit_account_id,
                            transfer.amount,
                            result.status.name,
                        )
                    )
        return outcomes

    return asyncio.run(run())


async def test_concurrent_writers_stay_exact(fresh_database) -> None:
    url = await fresh_database()
    funding_id, account_ids = tb.id(), [tb.id() for _ in range(12)]
    limited = tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    async with open_ledger(url) as ledger:
        await ledger.create_accounts(
            [tb.Account(id=funding_id, ledger=LEDGER_NUMBER, code=1)]
            + [tb.Account(id=i, ledger=LEDGER_NUMBER, code=1, flags=limited) for i in account_ids]
        )
        funding = [
            tb.Transfer(
                id=tb.id(),
                debit_account_id=funding_id,
                credit_account_id=i,
                amount=1_000,
                ledger=LEDGER_NUMBER,
                code=1,
            )
            for i in account_ids
        ]
        assert all(r.status == tb.CreateTransferStatus.CREATED for r in await ledger.create_transfers(funding))

    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        per_process = await asyncio.to_thread(
            pool.starmap, _writer, [(url, account_ids, seed) for seed in range(PROCESSES)]
        )

    expected: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # account -> [debits, credits]
    for account_id in account_ids:
        expected[account_id][1] += 1_000
    expected[funding_id][0] += 1_000 * len(account_ids)
    created = [o for outcomes in per_process for o in outcomes if o[4] == "CREATED"]
    statuses = {o[4] for outcomes in per_process for o in outcomes}
    for _, debit, credit, amount, _ in created:
        expected[debit][0] += amount
        expected[credit][1] += amount
    # The money is scarce enough that some transfers must have been refused for lack of funds.
    assert "EXCEEDS_CREDITS" in statuses and "CREATED" in statuses

    async with open_ledger(url) as ledger:
        found = await ledger.lookup_accounts([funding_id, *account_ids])
        stored = await ledger.lookup_transfers([o[0] for o in created])
        report = await run_check(ledger)
    assert {a.id: [a.debits_posted, a.credits_posted] for a in found} == dict(expected)
    assert len(stored) == len(created)
    assert all(a.debits_posted <= a.credits_posted for a in found if a.id != funding_id)
    assert report.ok, report.problems
    timestamps = sorted(t.timestamp for t in stored)
    assert len(set(timestamps)) == len(timestamps)


async def test_a_writer_whose_clock_runs_ahead_does_not_expire_anyones_holds(fresh_database, monkeypatch) -> None:
    """Cluster time's wall clock is the database's, not the writing process's: one request from a host
    whose clock is 20 minutes ahead must not carry cluster time forward and expire every hold in flight
    (cluster time never steps back, so each later request would find them expired too)."""
    url = await fresh_database()
    ahead_ns = 20 * 60 * 10**9
    async with open_ledger(url) as ledger:
        accounts = [tb.Account(id=i, ledger=LEDGER_NUMBER, code=1) for i in (21, 22, 23)]
        assert {r.status for r in await ledger.create_accounts(accounts)} == {tb.CreateAccountStatus.CREATED}
        hold = tb.Transfer(
            id=200, debit_account_id=21, credit_account_id=22, amount=70, ledger=LEDGER_NUMBER, code=1,
            flags=tb.TransferFlags.PENDING, timeout=600,
        )  # fmt: skip
        [held] = await ledger.create_transfers([hold])
        assert held.status == tb.CreateTransferStatus.CREATED

        class AheadClock:
            @staticmethod
            def time_ns() -> int:
                return time.time_ns() + ahead_ns

        with monkeypatch.context() as patched:
            patched.setattr("ledger.clock.time", AheadClock)
            unrelated = tb.Transfer(
                id=201, debit_account_id=23, credit_account_id=22, amount=1, ledger=LEDGER_NUMBER, code=1
            )
            [written] = await ledger.create_transfers([unrelated])
            assert written.status == tb.CreateTransferStatus.CREATED
            assert written.timestamp < time.time_ns() + 60 * 10**9  # the database's clock, not the host's

        post = tb.Transfer(
            id=202, pending_id=200, debit_account_id=21, credit_account_id=22, amount=70,
            ledger=LEDGER_NUMBER, code=1, flags=tb.TransferFlags.POST_PENDING_TRANSFER,
        )  # fmt: skip
        [posted] = await ledger.create_transfers([post])
        assert posted.status == tb.CreateTransferStatus.CREATED, posted.status
        found = {a.id: a for a in await ledger.lookup_accounts([21, 22])}
        assert (found[21].debits_posted, found[21].debits_pending, found[22].credits_posted) == (70, 0, 71)
        report = await run_check(ledger)
        assert report.ok, report.problems


async def test_the_check_of_a_two_page_ledger_under_traffic(fresh_database) -> None:
    url = await fresh_database()
    async with open_ledger(url) as ledger:
        adjustments_id, last_user_id = await two_page_ledger(ledger)
        live = BetweenPages(ledger, lambda: create_ok(ledger, thb_transfer(adjustments_id, last_user_id, 10)), 1)
        report = await run_check(live)
        assert report.ok and report.scans == 2, (report.problems, report.inconclusive)
        assert (report.ledgers[THB].debits_posted, report.ledgers[THB].credits_posted) == (10, 10)

        connection = await asyncpg.connect(url)
        try:  # storage damaged behind the ledger's back: 5 credits no transfer made
            await connection.execute(
                "UPDATE tb_ledger.accounts SET credits_posted = credits_posted + 5 WHERE id = $1",
                uuid.UUID(int=last_user_id),
            )
        finally:
            await connection.close()
        live.times_left = 1  # and a transfer lands between the first scan's page reads again
        report = await run_check(live)
    assert report.problems == [f"ledger {THB}: posted debits 20 != credits 25"]
    assert report.inconclusive == [] and report.scans == 3
