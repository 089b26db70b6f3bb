"""`run_check` passes a balanced ledger and names every broken invariant: unbalanced ledger, overdrawn
account, money resting in transit (posted, or pending unless allowed)."""

from __future__ import annotations

import tigerbeetle as tb

from ledger import accounts, open_ledger
from ledger.check import format_report, run_check
from ledger.memory import MemoryLedger
from pm.dev.ledger_demo import seed_demo

THB = 764


async def test_demo_ledger_is_clean() -> None:
    async with open_ledger("memory://") as ledger:
        balances = await seed_demo(ledger)
        report = await run_check(ledger)
    assert report.ok, report.problems
    assert balances["transit:THB"] == 0
    assert balances["fees:THB"] == 500
    assert balances["user:1001:THB"] == 1_000_000 - 15_000 - 500
    assert balances["user:1002:THB"] == 1_000_000 + 15_000
    totals = report.ledgers[THB]
    assert totals.debits_posted == totals.credits_posted
    assert "OK:" in format_report(report)


async def test_seeding_twice_moves_no_money_twice() -> None:
    async with open_ledger("memory://") as ledger:
        first = await seed_demo(ledger)
        second = await seed_demo(ledger)
        assert first == second
        assert (await run_check(ledger)).ok


async def test_money_resting_in_transit_is_reported() -> None:
    async with open_ledger("memory://") as ledger:
        transit, user = accounts.transit("THB"), accounts.user(5, "THB")
        await ledger.create_accounts([transit.to_tigerbeetle(), user.to_tigerbeetle()])
        results = await ledger.create_transfers(
            [
                tb.Transfer(
                    id=tb.id(),
                    debit_account_id=transit.id,
                    credit_account_id=user.id,
                    amount=70,
                    ledger=THB,
                    code=1,
                )
            ]
        )
        assert results[0].status == tb.CreateTransferStatus.CREATED
        report = await run_check(ledger)
    assert not report.ok
    assert report.problems == ["transit:THB holds -70 posted; it must be 0"]
    assert "FAILED: 1 problem(s)" in format_report(report)


async def test_pending_in_transit_fails_unless_allowed() -> None:
    async with open_ledger("memory://") as ledger:
        transit, user = accounts.transit("THB"), accounts.adjustments("THB")
        await ledger.create_accounts([transit.to_tigerbeetle(), user.to_tigerbeetle()])
        await ledger.create_transfers(
            [
                tb.Transfer(
                    id=tb.id(),
                    debit_account_id=user.id,
                    credit_account_id=transit.id,
                    amount=30,
                    ledger=THB,
                    code=1,
                    flags=tb.TransferFlags.PENDING,
                    timeout=3600,
                )
            ]
        )
        strict = await run_check(ledger)
        relaxed = await run_check(ledger, allow_pending_transit=True)
    assert strict.problems == ["transit:THB holds 30 pending; it must be 0"]
    assert relaxed.ok


class CorruptLedger(MemoryLedger):
    """A ledger whose storage was damaged behind TigerBeetle's back (as a restore gone wrong might)."""

    def __init__(self, stored: list[tb.Account]) -> None:
        super().__init__()
        self._stored = stored

    async def query_accounts(self, f: tb.QueryFilter) -> list[tb.Account]:
        return [a for a in self._stored if a.timestamp >= f.timestamp_min][: f.limit]


async def test_unbalanced_ledger_and_overdrawn_account_are_reported() -> None:
    overdrawn = tb.Account(
        id=1,
        debits_posted=10,
        credits_posted=5,
        ledger=THB,
        code=1,
        timestamp=1,
        flags=tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
    )
    over_credited = tb.Account(
        id=2,
        credits_posted=9,
        debits_pending=4,
        ledger=THB,
        code=1,
        timestamp=2,
        flags=tb.AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS,
    )
    report = await run_check(CorruptLedger([overdrawn, over_credited]))
    assert report.problems == [
        "account 1 breaks debits_must_not_exceed_credits",
        "account 2 breaks credits_must_not_exceed_debits",
        f"ledger {THB}: posted debits 10 != credits 14",
        f"ledger {THB}: pending debits 4 != credits 0",
    ]
