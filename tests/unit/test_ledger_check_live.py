"""`run_check` on a ledger of more than one page (8,200 accounts) while transfers land between its page
reads: a transfer or an expiring hold torn across two pages is no problem, traffic during every scan is
inconclusive (not a problem), and a real imbalance is still reported, with or without that traffic."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import tigerbeetle as tb

from ledger import open_ledger
from ledger.check import SCANS_MAX, format_report, run_check
from ledger.memory import MemoryLedger
from tests.support.ledger_check import THB, BetweenPages, create_ok, thb_transfer, two_page_ledger


@pytest.fixture
async def ledger() -> MemoryLedger:
    async with open_ledger("memory://") as opened:
        assert isinstance(opened, MemoryLedger)
        yield opened


async def test_a_transfer_committed_between_page_reads_is_no_imbalance(ledger: MemoryLedger) -> None:
    adjustments_id, last_user_id = await two_page_ledger(ledger)
    # Debits an account already read (page 1), credits one not read yet (page 2): read torn, 0 != 10.
    live = BetweenPages(ledger, lambda: create_ok(ledger, thb_transfer(adjustments_id, last_user_id, 10)), times=1)
    report = await run_check(live)
    assert report.ok, (report.problems, report.inconclusive)
    assert report.scans == 2 and live.query_accounts_calls == 4
    totals = report.ledgers[THB]
    assert (totals.accounts, totals.debits_posted, totals.credits_posted) == (8_200, 10, 10)


async def test_a_hold_expiring_between_page_reads_is_no_imbalance(ledger: MemoryLedger) -> None:
    """No transfer is committed while the check reads (an expiry is none), and yet the read is torn: one
    quiet scan proves nothing; the second one reads the expired hold on both sides."""
    adjustments_id, last_user_id = await two_page_ledger(ledger)
    await create_ok(ledger, thb_transfer(adjustments_id, last_user_id, 30, timeout_s=1))
    live = BetweenPages(ledger, lambda: asyncio.sleep(1.1), times=1)  # page 2's read expires the hold
    report = await run_check(live)
    assert report.ok, (report.problems, report.inconclusive)
    totals = report.ledgers[THB]
    assert (report.scans, totals.debits_pending, totals.credits_pending) == (2, 0, 0)


async def test_traffic_during_every_scan_is_inconclusive_not_a_problem(ledger: MemoryLedger) -> None:
    adjustments_id, last_user_id = await two_page_ledger(ledger)
    live = BetweenPages(ledger, lambda: create_ok(ledger, thb_transfer(adjustments_id, last_user_id, 10)), times=99)
    report = await run_check(live)
    assert report.problems == [] and not report.ok
    assert report.scans == SCANS_MAX
    assert report.inconclusive == [f"ledger {THB}: posted debits 30 != credits 40"]
    assert "INCONCLUSIVE: out of balance in each of 4 scans" in format_report(report)


class Planted:
    """`ledger` as storage damaged behind TigerBeetle's back reads: `extra` more posted credits on one account."""

    def __init__(self, ledger: MemoryLedger, account_id: int, extra: int) -> None:
        self._ledger, self._account_id, self._extra = ledger, account_id, extra

    def __getattr__(self, name: str):
        return getattr(self._ledger, name)

    async def query_accounts(self, f: tb.QueryFilter) -> list[tb.Account]:
        return [
            dataclasses.replace(a, credits_posted=a.credits_posted + self._extra) if a.id == self._account_id else a
            for a in await self._ledger.query_accounts(f)
        ]


@pytest.mark.parametrize("torn_scans", [0, 1, 2], ids=["quiet", "one_torn_scan", "two_torn_scans"])
async def test_a_real_imbalance_on_a_large_ledger_is_reported(ledger: MemoryLedger, torn_scans: int) -> None:
    adjustments_id, last_user_id = await two_page_ledger(ledger)
    await create_ok(ledger, thb_transfer(adjustments_id, last_user_id, 10))
    planted = Planted(ledger, last_user_id, extra=5)
    live = BetweenPages(planted, lambda: create_ok(ledger, thb_transfer(adjustments_id, last_user_id, 1)), torn_scans)
    report = await run_check(live)
    posted = 10 + torn_scans
    assert report.problems == [f"ledger {THB}: posted debits {posted} != credits {posted + 5}"]
    assert report.inconclusive == [] and not report.ok
    assert report.scans == 2 + torn_scans  # confirmed by the first two scans with no transfer around them
    assert "FAILED: 1 problem(s)" in format_report(report)
