"""`pm ledger check`: the ledger's invariants, read from the ledger itself.

- per ledger (currency), Σ debits = Σ credits, for posted and for pending amounts;
- no account breaks its own flags (`debits_must_not_exceed_credits`, `credits_must_not_exceed_debits`);
- every transit account is back to zero: money passes through transit, never rests there.

A ledger of more than one page is read in several requests, and no backend offers a snapshot across
requests (TigerBeetle has none), so a transfer committed between two page reads may be counted on one
side only: a ledger in balance read as out of balance. So an imbalance is only reported once it is
confirmed: read in one request (a ledger of one page: each request is atomic on every backend), or two
scans in a row read the same totals for that ledger and no transfer on it was committed from the start
of the first to the end of the second. Why that proves a real imbalance: without transfers, posted
amounts do not change and pending amounts only fall (a hold expires); totals equal at both ends then mean
every account of the ledger kept its values from its first read to its second, so the first scan read
one instant's state. A ledger out of balance in every one of `SCANS_MAX` scans but
never confirmed (transfers on it during every pair) is reported as inconclusive, apart from problems.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import tigerbeetle as tb

from ledger.accounts import CURRENCY_LEDGER, AccountKind, transit
from ledger.filters import query_filter
from ledger.open import Ledger
from ledger.validate import BATCH_EVENTS_MAX

PAGES_MAX = 100_000  # 819 million accounts: far beyond any ledger this check is run on
# Scans of every account at most, per check: the first, then until an imbalance is confirmed or ruled out
# (module docstring). A real imbalance takes two; a ledger in balance, torn by a transfer, takes two (the
# second one reads it in balance); four give traffic three chances to leave a ledger out of balance alone.
SCANS_MAX = 4
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
    # Imbalances read in every scan but never confirmed: transfers on that ledger during every pair of
    # scans (module docstring). Not problems, but not OK either: a real imbalance looks the same.
    inconclusive: list[str] = field(default_factory=list)
    scans: int = 0  # how often every account was read

    @property
    def ok(self) -> bool:
        return not self.problems and not self.inconclusive


@dataclass(slots=True)
class _Scan:
    """One read of every account."""

    report: CheckReport  # the per-account problems and transit balances of this scan
    totals: dict[int, LedgerTotals]
    transfer_timestamp_before: int  # the newest transfer's timestamp when the scan began; 0: none yet
    pages: int  # requests it took


async def account_pages(ledger: Ledger, pages_max: int = PAGES_MAX) -> AsyncIterator[list[tb.Account]]:
    """Every account, oldest first, one page (a full batch) per request: memory holds one page at a time.
    More than `pages_max` pages is a RuntimeError (a bound, not a normal end)."""
    timestamp_min = 0
    for _ in range(pages_max):
        page = await ledger.query_accounts(query_filter(timestamp_min=timestamp_min, limit=BATCH_EVENTS_MAX))
        yield page
        if len(page) < BATCH_EVENTS_MAX:
            return
        timestamp_min = page[-1].timestamp + 1
    raise RuntimeError(f"more than {pages_max} pages of {BATCH_EVENTS_MAX} accounts; the check stops there")


async def all_accounts(ledger: Ledger) -> list[tb.Account]:
    """Every account, oldest first."""
    return [account async for page in account_pages(ledger) for account in page]


async def run_check(
    ledger: Ledger, allow_pending_transit: bool = False, pages_max: int = PAGES_MAX, scans_max: int = SCANS_MAX
) -> CheckReport:
    """Check the invariants; `allow_pending_transit` tolerates holds of intents still in flight. Reads every
    account at most `scans_max` times (module docstring), each time at most `pages_max` pages (more:
    RuntimeError)."""
    assert scans_max >= 1, scans_max
    confirmed: dict[int, LedgerTotals] = {}
    previous: _Scan | None = None
    scans = 0
    for _ in range(scans_max):
        scan = await _scan(ledger, allow_pending_transit, pages_max)
        scans += 1
        unsettled = [number for number, t in scan.totals.items() if _unbalanced(t) and number not in confirmed]
        if scan.pages == 1:  # one request reads one instant's state on every backend: nothing to tear
            confirmed.update((number, scan.totals[number]) for number in unsettled)
            unsettled = []
        if previous is not None and unsettled:
            quiet = await _ledgers_without_transfers_since(ledger, unsettled, previous.transfer_timestamp_before)
            for number in quiet:
                if _balances(previous.totals.get(number)) == _balances(scan.totals[number]):
                    confirmed[number] = scan.totals[number]
            unsettled = [number for number in unsettled if number not in confirmed]
        if not unsettled:
            break
        previous = scan
    report = scan.report
    report.scans = scans
    report.ledgers = scan.totals
    report.problems.extend(problem for number, t in sorted(confirmed.items()) for problem in _imbalances(number, t))
    report.inconclusive = [problem for number in unsettled for problem in _imbalances(number, scan.totals[number])]
    return report


async def _scan(ledger: Ledger, allow_pending_transit: bool, pages_max: int) -> _Scan:
    transfer_timestamp_before = await _newest_transfer_timestamp(ledger)
    report = CheckReport()
    totals: dict[int, LedgerTotals] = defaultdict(LedgerTotals)
    pages = 0
    async for page in account_pages(ledger, pages_max):
        pages += 1
        for account in page:
            _check_account(account, totals, report, allow_pending_transit)
    return _Scan(report, dict(sorted(totals.items())), transfer_timestamp_before, pages)


async def _newest_transfer_timestamp(ledger: Ledger) -> int:
    newest = await ledger.query_transfers(query_filter(flags=tb.QueryFilterFlags.REVERSED))
    return newest[0].timestamp if newest else 0


async def _ledgers_without_transfers_since(ledger: Ledger, numbers: list[int], timestamp: int) -> list[int]:
    """Which of the ledgers `numbers` had no transfer committed after the one at `timestamp` (timestamps
    only grow, imported ones too): one request each."""
    quiet = []
    for number in numbers:
        if not await ledger.query_transfers(query_filter(ledger=number, timestamp_min=timestamp + 1)):
            quiet.append(number)
    return quiet


def _balances(t: LedgerTotals | None) -> tuple[int, int, int, int] | None:
    return None if t is None else (t.debits_posted, t.credits_posted, t.debits_pending, t.credits_pending)


def _unbalanced(t: LedgerTotals) -> bool:
    return t.debits_posted != t.credits_posted or t.debits_pending != t.credits_pending


def _imbalances(number: int, t: LedgerTotals) -> list[str]:
    found = []
    if t.debits_posted != t.credits_posted:
        found.append(f"ledger {number}: posted debits {t.debits_posted} != credits {t.credits_posted}")
    if t.debits_pending != t.credits_pending:
        found.append(f"ledger {number}: pending debits {t.debits_pending} != credits {t.credits_pending}")
    return found


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
    if report.problems:
        lines.append(f"FAILED: {len(report.problems)} problem(s)")
        lines.extend(f"  - {problem}" for problem in report.problems)
    if report.inconclusive:
        lines.append(
            f"INCONCLUSIVE: out of balance in each of {report.scans} scans, with transfers on the ledger between"
            " them: traffic or a real imbalance (run the check again when traffic is low)"
        )
        lines.extend(f"  - {imbalance}" for imbalance in report.inconclusive)
    return "\n".join(lines)
