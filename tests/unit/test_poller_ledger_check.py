"""The status poller's periodic ledger check exports what the alerts read: each transit account's posted
and pending balance (posted money resting in transit shows, with the problem counted), the time of the
check; a ledger larger than its page bound is a counted failure that leaves the last values in place;
the check reads a ledger of more than one page, one page at a time, within its bound; and an imbalance
traffic never let it confirm is exported as inconclusive, not as a problem."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import tigerbeetle as tb
from prometheus_client import REGISTRY

from consumers.context import StageContext
from consumers.poller import check_ledger_once
from ledger import BATCH_EVENTS_MAX, accounts, open_ledger
from ledger.check import run_check
from pm.config.topology import load_topology
from tests.support.ledger_check import BetweenPages, create_ok, thb_transfer, two_page_ledger

THB = 764


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
async def context() -> AsyncIterator[StageContext]:
    async with open_ledger("memory://") as ledger:
        # The check reads the ledger only: no database or Redis is opened.
        yield StageContext(pool=None, ledger=ledger, redis=None, topology=load_topology())  # type: ignore[arg-type]


def transfer(
    debit: accounts.NamedAccount, credit: accounts.NamedAccount, amount: int, pending: bool = False
) -> tb.Transfer:
    return tb.Transfer(
        id=tb.id(), debit_account_id=debit.id, credit_account_id=credit.id, amount=amount, ledger=THB, code=1,
        flags=tb.TransferFlags.PENDING if pending else tb.TransferFlags.NONE, timeout=3600 if pending else 0,
    )  # fmt: skip


async def test_a_clean_ledger_exports_its_holds_and_no_problem(context: StageContext) -> None:
    transit, adjustments = accounts.transit("THB"), accounts.adjustments("THB")
    await context.ledger.create_accounts([transit.to_tigerbeetle(), adjustments.to_tigerbeetle()])
    await context.ledger.create_transfers([transfer(adjustments, transit, 30, pending=True)])
    before_s = time.time()
    report = await check_ledger_once(context)
    assert report is not None and report.ok, report
    assert sample("pm_ledger_transit_minor", currency="THB", balance="pending") == 30
    assert sample("pm_ledger_transit_minor", currency="THB", balance="posted") == 0
    assert sample("pm_ledger_transit_minor", currency="USD", balance="posted") == 0  # no account yet: 0
    assert sample("pm_ledger_check_problems") == 0
    assert sample("pm_ledger_check_timestamp_seconds") >= before_s


async def test_posted_money_in_transit_is_exported_as_a_problem(context: StageContext) -> None:
    transit, user = accounts.transit("THB"), accounts.user(5, "THB")
    await context.ledger.create_accounts([transit.to_tigerbeetle(), user.to_tigerbeetle()])
    await context.ledger.create_transfers([transfer(transit, user, 70)])
    report = await check_ledger_once(context)
    assert report is not None and report.problems == ["transit:THB holds -70 posted; it must be 0"]
    assert sample("pm_ledger_transit_minor", currency="THB", balance="posted") == -70
    assert sample("pm_ledger_check_problems") == 1


async def test_a_ledger_past_the_page_bound_is_a_counted_failure(context: StageContext) -> None:
    await context.ledger.create_accounts([accounts.transit("THB").to_tigerbeetle()])
    await check_ledger_once(context)
    checked_s = sample("pm_ledger_check_timestamp_seconds")
    failures = sample("pm_ledger_check_failures_total") or 0
    assert await check_ledger_once(context, pages_max=0) is None
    assert sample("pm_ledger_check_failures_total") == failures + 1
    assert sample("pm_ledger_check_timestamp_seconds") == checked_s  # the last check's values stay


async def test_the_check_pages_through_more_than_one_batch_within_its_bound() -> None:
    async with open_ledger("memory://") as ledger:
        users = [accounts.user(user_id, "THB").to_tigerbeetle() for user_id in range(1, BATCH_EVENTS_MAX + 2)]
        for start in range(0, len(users), BATCH_EVENTS_MAX):
            await ledger.create_accounts(users[start : start + BATCH_EVENTS_MAX])
        with pytest.raises(RuntimeError, match="more than 1 pages"):
            await run_check(ledger, pages_max=1)
        report = await run_check(ledger, pages_max=2)
    assert report.ok and report.ledgers[THB].accounts == BATCH_EVENTS_MAX + 1


async def test_traffic_during_every_scan_is_exported_as_inconclusive_not_as_a_problem(context: StageContext) -> None:
    ledger = context.ledger
    adjustments_id, last_user_id = await two_page_ledger(ledger)
    live = BetweenPages(ledger, lambda: create_ok(ledger, thb_transfer(adjustments_id, last_user_id, 10)), times=99)
    live_context = StageContext(pool=None, ledger=live, redis=None, topology=context.topology)  # type: ignore[arg-type]
    report = await check_ledger_once(live_context)
    assert report is not None and report.problems == [] and len(report.inconclusive) == 1
    assert sample("pm_ledger_check_problems") == 0
    assert sample("pm_ledger_check_inconclusive") == 1
    live.times_left = 0  # traffic stops: the next check reads the ledger in balance
    report = await check_ledger_once(live_context)
    assert report is not None and report.ok
    assert sample("pm_ledger_check_inconclusive") == 0
