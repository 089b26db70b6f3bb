"""`pm ledger check`: the ledger's invariants, read from the ledger itself.

- per ledger (currency), Σ debits = Σ credits, for posted and for pending amounts;
- no account breaks its own flags (`debits_must_not_exceed_credits`, `credits_must_not_exceed_debits`);
- every transit account is back to zero: money passes through transit, never rests there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import tigerbeetle as tb

from ledger.accounts import CURRENCY_LEDGER, AccountKind, transit
from ledger.open import Ledger
from ledger.validate import BATCH_EVENTS_MAX

PAGES_MAX = 100_000  # 819 million accounts: far beyond any ledger this check is run on
_TRANSIT_NAMES = {transit(currency).id: transit(currency).name for currency in CURRENCY_LEDGER}


@dataclass(slots=True)
class LedgerTotals:
    accounts: int = 0
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0


@dataclass(slots=True)
class TransitBalance:
    name: str
    ledger: int
    posted_net: int  # credits_posted - debits_posted
    pending_net: int  # credits_pending - debits_pending


@dataclass(slots=True)
class CheckReport:
    ledgers: dict[int, LedgerTotals] = field(default_factory=dict)
    transit: list[TransitBalance] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def account_pages(ledger: Ledger, pages_max: int = PAGES_MAX) -> AsyncIterator[list[tb.Account]]:
    """Every account, oldest first, one page (a full batch) per request: memory holds one page at a time.
    More than `pages_max` pages is a RuntimeError (a bound, not a normal end)."""
    timestamp_min = 0
    for _ in range(pages_max):
        page = await ledger.query_accounts(
            tb.QueryFilter(
                user_data_128=0,
                user_data_64=0,
                user_data_32=0,
                ledger=0,
                code=0,
                timestamp_min=timestamp_min,
                timestamp_max=0,
                limit=BATCH_EVENTS_MAX,
                flags=tb.QueryFilterFlags.NONE,
            )
        )
        yield page
        if len(page) < BATCH_EVENTS_MAX:
            return
        timestamp_min = page[-1].timestamp + 1
    raise RuntimeError(f"more than {pages_max} pages of {BATCH_EVENTS_MAX} accounts; the check stops there")


async def all_accounts(ledger: Ledger) -> list[tb.Account]:
    """Every account, oldest first."""
    return [account async for page in account_pages(ledger) for account in page]


async def run_check(ledger: Ledger, allow_pending_transit: bool = False, pages_max: int = PAGES_MAX) -> CheckReport:
    """Check the invariants; `allow_pending_transit` tolerates holds of intents still in flight. Reads at
    most `pages_max` pages of accounts (more: RuntimeError)."""
    report = CheckReport()
    totals: dict[int, LedgerTotals] = defaultdict(LedgerTotals)
    async for page in account_pages(ledger, pages_max):
        for account in page:
            _check_account(account, totals, report, allow_pending_transit)
    for ledger_number, t in sorted(totals.items()):
        if t.debits_posted != t.credits_posted:
            report.problems.append(
                f"ledger {ledger_number}: posted debits {t.debits_posted} != credits {t.credits_posted}"
            )
        if t.debits_pending != t.credits_pending:
            report.problems.append(
                f"ledger {ledger_number}: pending debits {t.debits_pending} != credits {t.credits_pending}"
            )
    report.ledgers = dict(sorted(totals.items()))
    return report


def _check_account(
    a: tb.Account, totals: dict[int, LedgerTotals], report: CheckReport, allow_pending_transit: bool
) -> None:
    t = totals[a.ledger]
    t.accounts += 1
    t.debits_posted += a.debits_posted
    t.credits_posted += a.credits_posted
    t.debits_pending += a.debits_pending
    t.credits_pending += a.credits_pending
    if a.flags & tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and (
        a.debits_posted + a.debits_pending > a.credits_posted
    ):
        report.problems.append(f"account {a.id} breaks debits_must_not_exceed_credits")
    if a.flags & tb.AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS and (
        a.credits_posted + a.credits_pending > a.debits_posted
    ):
        report.problems.append(f"account {a.id} breaks credits_must_not_exceed_debits")
    if a.code == AccountKind.TRANSIT:
        balance = TransitBalance(
            name=_TRANSIT_NAMES.get(a.id, f"transit account {a.id}"),
            ledger=a.ledger,
            posted_net=a.credits_posted - a.debits_posted,
            pending_net=a.credits_pending - a.debits_pending,
        )
        report.transit.append(balance)
        if balance.posted_net != 0:
            report.problems.append(f"{balance.name} holds {balance.posted_net} posted; it must be 0")
        if balance.pending_net != 0 and not allow_pending_transit:
            report.problems.append(f"{balance.name} holds {balance.pending_net} pending; it must be 0")


def format_report(report: CheckReport) -> str:
    currency_of = {number: code for code, number in CURRENCY_LEDGER.items()}
    lines = ["ledger  currency  accounts  debits_posted  credits_posted  debits_pending  credits_pending"]
    for number, t in report.ledgers.items():
        lines.append(
            f"{number:<7} {currency_of.get(number, '?'):<9} {t.accounts:>8}  {t.debits_posted:>13}  "
            f"{t.credits_posted:>14}  {t.debits_pending:>14}  {t.credits_pending:>15}"
        )
    if not report.ledgers:
        lines.append("(no accounts)")
    lines.append("transit accounts (net posted / net pending):")
    for balance in report.transit:
        lines.append(f"  {balance.name}: {balance.posted_net} / {balance.pending_net}")
    if not report.transit:
        lines.append("  (none)")
    if report.ok:
        lines.append("OK: debits = credits on every ledger, no account breaks its flags, transit is zero")
    else:
        lines.append(f"FAILED: {len(report.problems)} problem(s)")
        lines.extend(f"  - {problem}" for problem in report.problems)
    return "\n".join(lines)
