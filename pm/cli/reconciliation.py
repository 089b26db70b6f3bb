"""`pm reconcile`: PostgreSQL's intents and history checked against the ledger, page by page.

Intents (keyset pages by id, one ledger lookup per page):
- a SETTLED intent has exactly its legs in the ledger: every transfer its channel's `authorize()` and
  `settle()` make for it, with the amounts and accounts they name, and no other leg (no void, no fee
  leg its fees do not call for);
- a FAILED or REJECTED intent (or one not yet dispatched: CREATED, VALIDATED, PRICED) has no posted
  money (none of its channel's settlement legs), and no hold still pending: one it has is voided or
  expired. Pending holds belong to intents in flight only: AUTHORIZED, or CLEARED (a PSP channel holds
  at dispatch, before its connector makes the intent AUTHORIZED), which are not checked.
The legs are derived from the channel's own methods (on a copy of the intent with fees, so the ids of
legs a fee would add are looked up too), never listed here, so this check cannot drift from what the
stages post.

Users (keyset pages by user id, one ledger lookup per page): what each user's history says moved on
their balance (credits minus debits) equals their ledger account's posted balance; and per currency,
the user accounts' posted balances add up to the history of all users (a user account that moved money
without any history row shows here).

A mismatch is looked at a second time (the intent or user read again, the ledger asked again) before
it is reported, so an intent that changed state between the two reads is not reported; run it on a
quiet system for an exact answer (a settlement between the two reads of a user's history and balance
can still show).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import tigerbeetle as tb

import channels
from ledger.accounts import CURRENCY_LEDGER, AccountKind, user
from ledger.open import Ledger
from ledger.validate import BATCH_EVENTS_MAX
from pm.domain.intent import NS_PER_S, Intent, State
from pm.store import intents as intent_store
from pm.store import reconcile as store

SETTLED_LEG_MISSING = "settled-leg-missing"
SETTLED_LEG_DIFFERS = "settled-leg-differs"
SETTLED_LEG_UNEXPECTED = "settled-leg-unexpected"
UNSETTLED_POSTED_MONEY = "unsettled-posted-money"
HOLD_PENDING = "hold-pending"
INTENT_UNREADABLE = "intent-unreadable"
HISTORY_BALANCE = "history-balance"
HISTORY_TOTAL = "history-total"

# Money may be held (or posted, just before the state's commit) for these: nothing to check yet.
IN_FLIGHT_STATES = frozenset({State.CLEARED, State.AUTHORIZED})
# Loop bounds far beyond any database: a billion intents, a billion users.
PAGES_MAX = 1_000_000
ACCOUNT_PAGES_MAX = 1_000_000
# A report keeps at most this many mismatches (all are counted, and printed as they are found).
MISMATCHES_KEPT_MAX = 10_000

_STATE_FLAGS = (
    tb.TransferFlags.PENDING | tb.TransferFlags.POST_PENDING_TRANSFER | tb.TransferFlags.VOID_PENDING_TRANSFER
)


@dataclass(frozen=True, slots=True)
class Mismatch:
    kind: str
    subject: str  # an intent id, or a user account's name, or a currency
    detail: str

    def line(self) -> str:
        return f"{self.kind} {self.subject}: {self.detail}"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


@dataclass(slots=True)
class ReconcileReport:
    intents_checked: int = 0
    users_checked: int = 0
    mismatch_count: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    on_mismatch: Callable[[Mismatch], None] | None = None

    @property
    def ok(self) -> bool:
        return self.mismatch_count == 0

    def add(self, mismatch: Mismatch) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < MISMATCHES_KEPT_MAX:
            self.mismatches.append(mismatch)
        if self.on_mismatch is not None:
            self.on_mismatch(mismatch)


@dataclass(frozen=True, slots=True)
class IntentLegs:
    """An intent's transfers as its channel derives them."""

    expected_settled: list[tb.Transfer]  # what a SETTLED intent has: authorize() and settle() of it
    hold_ids: frozenset[int]  # its pending transfers
    void_ids: frozenset[int]
    posting_ids: frozenset[int]  # every leg settle() may post (fee legs included)
    account_names: dict[int, str]
    # Every leg the channel may make for it, as made for this intent (a fee leg it has no fee for: as
    # made for the copy with fees), for `pm intents show`.
    candidates: list[tb.Transfer] = field(default_factory=list)

    @property
    def lookup_ids(self) -> set[int]:
        return {t.id for t in self.expected_settled} | self.hold_ids | self.void_ids | self.posting_ids


def intent_legs(intent: Intent) -> IntentLegs | None:
    """The legs of the intent's channel; None when it has no channel (refused before routing: no money)."""
    channel = channels.channel_named(intent.channel)
    if channel is None:
        return None
    authorized, settled, voided = channel.authorize(intent), channel.settle(intent), channel.void(intent)
    # With a fee on both sides, the channel makes every leg it can make for this intent: their ids are
    # derived from the intent and the leg's name only, so the copy's ids are the intent's.
    probed = (authorized, settled, voided)
    if not (intent.fee_pre_minor and intent.fee_post_minor):
        probe = replace(
            intent, fee_pre_minor=max(1, intent.fee_pre_minor), fee_post_minor=max(1, intent.fee_post_minor)
        )
        probed = (channel.authorize(probe), channel.settle(probe), channel.void(probe))
    own = authorized + settled + voided
    own_ids = {t.id for t in own}
    return IntentLegs(
        expected_settled=authorized + settled,
        hold_ids=frozenset(t.id for t in probed[0] if t.flags & tb.TransferFlags.PENDING),
        void_ids=frozenset(t.id for t in probed[2]),
        posting_ids=frozenset(t.id for t in probed[1]),
        account_names={account.id: account.name for account in channel.accounts(intent)},
        candidates=own + [t for t in probed[0] + probed[1] + probed[2] if t.id not in own_ids],
    )


def describe(transfer: tb.Transfer, names: dict[int, str]) -> str:
    """A transfer for an operator: its id, what kind, the accounts by name, the amount."""
    kind = "hold" if transfer.flags & tb.TransferFlags.PENDING else "transfer"
    if transfer.flags & tb.TransferFlags.POST_PENDING_TRANSFER:
        kind = "post of the hold"
    if transfer.flags & tb.TransferFlags.VOID_PENDING_TRANSFER:
        kind = "void of the hold"
    text = f"{kind} {transfer.id:032x}"
    if transfer.debit_account_id or transfer.credit_account_id:
        debit = names.get(transfer.debit_account_id, f"{transfer.debit_account_id:032x}")
        credit = names.get(transfer.credit_account_id, f"{transfer.credit_account_id:032x}")
        text += f" {debit} -> {credit}"
    return f"{text} amount {transfer.amount}"


def transfer_differences(expected: tb.Transfer, found: tb.Transfer) -> list[str]:
    """How a found transfer differs from the one the channel makes (fields the channel leaves 0: any)."""
    differences = []
    for name in ("amount", "debit_account_id", "credit_account_id", "pending_id", "ledger", "code"):
        want, got = getattr(expected, name), getattr(found, name)
        if (want or name == "amount") and want != got:
            differences.append(f"{name} {got} (expected {want})")
    if (expected.flags & _STATE_FLAGS) != (found.flags & _STATE_FLAGS):
        differences.append(f"flags {int(found.flags)} (expected {int(expected.flags)})")
    return differences


def check_intent(
    intent: Intent, legs: IntentLegs | None, found: dict[int, tb.Transfer], now_s: float
) -> list[Mismatch]:
    """The mismatches between one intent's state and its transfers in the ledger (`found`, by id)."""
    subject = f"intent {intent.id}"
    if legs is None and intent.state == State.SETTLED:
        return [Mismatch(INTENT_UNREADABLE, subject, f"SETTLED with no known channel ({intent.channel!r})")]
    if legs is None or intent.state in IN_FLIGHT_STATES:
        return []
    if intent.state == State.SETTLED:
        return _check_settled(intent, legs, found, subject)
    mismatches = [
        Mismatch(
            UNSETTLED_POSTED_MONEY, subject, f"{intent.state} but {describe(found[i], legs.account_names)} is posted"
        )
        for i in sorted(legs.posting_ids)
        if i in found
    ]
    # Voided, or posted (reported above): either way no longer held.
    released = any(i in found for i in legs.void_ids | legs.posting_ids)
    for hold_id in sorted(legs.hold_ids):
        hold = found.get(hold_id)
        if hold is None or released:
            continue
        expires_at_s = hold.timestamp / NS_PER_S + hold.timeout
        if hold.timeout == 0 or now_s < expires_at_s:
            detail = (
                f"{intent.state} but {describe(hold, legs.account_names)} is still pending (not voided, not expired)"
            )
            mismatches.append(Mismatch(HOLD_PENDING, subject, detail))
    return mismatches


def _check_settled(intent: Intent, legs: IntentLegs, found: dict[int, tb.Transfer], subject: str) -> list[Mismatch]:
    mismatches = []
    for expected in legs.expected_settled:
        got = found.get(expected.id)
        if got is None:
            detail = f"{describe(expected, legs.account_names)} is not in the ledger"
            mismatches.append(Mismatch(SETTLED_LEG_MISSING, subject, detail))
            continue
        differences = transfer_differences(expected, got)
        if differences:
            detail = f"{describe(expected, legs.account_names)} differs: {', '.join(differences)}"
            mismatches.append(Mismatch(SETTLED_LEG_DIFFERS, subject, detail))
    expected_ids = {t.id for t in legs.expected_settled}
    for transfer_id in sorted(legs.lookup_ids - expected_ids):
        if transfer_id in found:
            detail = f"{describe(found[transfer_id], legs.account_names)} is in the ledger; its settlement makes none"
            mismatches.append(Mismatch(SETTLED_LEG_UNEXPECTED, subject, detail))
    return mismatches


async def lookup_transfers(ledger: Ledger, ids: list[int], request_events_max: int) -> dict[int, tb.Transfer]:
    """The transfers with these ids that exist, a request per `request_events_max` ids."""
    step = max(1, min(request_events_max, BATCH_EVENTS_MAX))
    found: dict[int, tb.Transfer] = {}
    for start in range(0, len(ids), step):
        for transfer in await ledger.lookup_transfers(ids[start : start + step]):
            found[transfer.id] = transfer
    return found


async def check_intents(ledger: Ledger, page: list[Intent], request_events_max: int) -> list[Mismatch]:
    """The mismatches of a page of intents, from one ledger lookup (chunked to the request size)."""
    legs: dict[uuid.UUID, IntentLegs | None] = {}
    mismatches: list[Mismatch] = []
    for intent in page:
        try:
            legs[intent.id] = intent_legs(intent)
        except (AssertionError, ValueError) as exc:  # a row no channel can make transfers of
            mismatches.append(Mismatch(INTENT_UNREADABLE, f"intent {intent.id}", f"{intent.channel}: {exc!r}"))
    ids = sorted({i for found in legs.values() if found is not None for i in found.lookup_ids})
    found = await lookup_transfers(ledger, ids, request_events_max)
    now_s = time.time()
    for intent in page:
        if intent.id in legs:
            mismatches += check_intent(intent, legs[intent.id], found, now_s)
    return mismatches


async def reconcile_intents(
    pool: asyncpg.Pool | asyncpg.Connection,
    ledger: Ledger,
    report: ReconcileReport,
    request_events_max: int,
    page_size: int = store.RECONCILE_PAGE_INTENTS_MAX,
) -> None:
    """Every intent, a page at a time; a page's mismatches are confirmed on a second read."""
    after: uuid.UUID | None = None
    for _ in range(PAGES_MAX):
        page = await store.intents_page(pool, after, page_size)
        if not page:
            return
        mismatches = await check_intents(ledger, page, request_events_max)
        if mismatches:
            again = await intent_store.load_intents(pool, sorted({_intent_id(m) for m in mismatches}))
            for mismatch in await check_intents(ledger, again, request_events_max):
                report.add(mismatch)
        report.intents_checked += len(page)
        after = page[-1].id
        if len(page) < page_size:
            return
    raise RuntimeError(f"more than {PAGES_MAX} pages of intents")


def _intent_id(mismatch: Mismatch) -> uuid.UUID:
    return uuid.UUID(mismatch.subject.removeprefix("intent "))


async def _user_balances(ledger: Ledger, sums: list[store.HistorySum]) -> dict[tuple[int, str], int]:
    """Posted balance (credits - debits) of each user account the sums name (absent: 0)."""
    by_id = {user(s.user_id, s.currency).id: (s.user_id, s.currency) for s in sums}
    balances = dict.fromkeys(by_id.values(), 0)
    ids = list(by_id)
    for start in range(0, len(ids), BATCH_EVENTS_MAX):
        for account in await ledger.lookup_accounts(ids[start : start + BATCH_EVENTS_MAX]):
            balances[by_id[account.id]] = account.credits_posted - account.debits_posted
    return balances


async def _history_mismatches(
    pool: asyncpg.Pool | asyncpg.Connection, ledger: Ledger, sums: list[store.HistorySum]
) -> list[tuple[store.HistorySum, int]]:
    """(history sum, ledger balance) of each user whose balance differs from their history, read twice."""
    balances = await _user_balances(ledger, sums)
    differing = [s for s in sums if balances[(s.user_id, s.currency)] != s.net_minor]
    if not differing:
        return []
    keys = {(s.user_id, s.currency) for s in differing}
    again = [
        s
        for s in await store.history_sums_of(pool, sorted({s.user_id for s in differing}))
        if (s.user_id, s.currency) in keys
    ]
    balances = await _user_balances(ledger, again)
    return [(s, balances[(s.user_id, s.currency)]) for s in again if balances[(s.user_id, s.currency)] != s.net_minor]


async def reconcile_history(
    pool: asyncpg.Pool | asyncpg.Connection,
    ledger: Ledger,
    report: ReconcileReport,
    page_size: int = store.RECONCILE_PAGE_USERS_MAX,
) -> None:
    """Every user's history sum against their ledger balance, then each currency's totals."""
    history_total: dict[str, int] = defaultdict(int)
    explained: dict[str, int] = defaultdict(int)  # ledger minus history, of the users reported
    after = 0
    for _ in range(PAGES_MAX):
        sums = await store.history_sums_page(pool, after, page_size)
        unknown = [s for s in sums if s.currency not in CURRENCY_LEDGER]
        for s in unknown:
            report.add(Mismatch(HISTORY_BALANCE, f"user {s.user_id}", f"history in unknown currency {s.currency!r}"))
        sums = [s for s in sums if s.currency not in {u.currency for u in unknown}]
        for s, balance_minor in await _history_mismatches(pool, ledger, sums):
            explained[s.currency] += balance_minor - s.net_minor
            detail = f"history sums to {s.net_minor}, the ledger's posted balance is {balance_minor}"
            report.add(Mismatch(HISTORY_BALANCE, user(s.user_id, s.currency).name, detail))
        for s in sums:
            history_total[s.currency] += s.net_minor
        users = {s.user_id for s in sums} | {s.user_id for s in unknown}
        report.users_checked += len(users)
        if len(users) < page_size:
            break
        after = max(users)
    else:
        raise RuntimeError(f"more than {PAGES_MAX} pages of users")
    ledger_total = await user_account_totals(ledger)
    for currency, number in CURRENCY_LEDGER.items():
        unexplained = ledger_total.get(number, 0) - history_total[currency] - explained[currency]
        if unexplained:
            detail = (
                f"user accounts hold {ledger_total.get(number, 0)} posted, users' history sums to"
                f" {history_total[currency]}: {unexplained} is on user accounts without history"
            )
            report.add(Mismatch(HISTORY_TOTAL, currency, detail))


async def user_account_totals(ledger: Ledger) -> dict[int, int]:
    """Per ledger (currency), the posted balance of all user accounts, a page per request."""
    totals: dict[int, int] = defaultdict(int)
    timestamp_min = 0
    for _ in range(ACCOUNT_PAGES_MAX):
        page = await ledger.query_accounts(
            tb.QueryFilter(
                user_data_128=0, user_data_64=0, user_data_32=0, ledger=0, code=int(AccountKind.USER),
                timestamp_min=timestamp_min, timestamp_max=0, limit=BATCH_EVENTS_MAX, flags=tb.QueryFilterFlags.NONE,
            )
        )  # fmt: skip
        for account in page:
            totals[account.ledger] += account.credits_posted - account.debits_posted
        if len(page) < BATCH_EVENTS_MAX:
            return dict(totals)
        timestamp_min = page[-1].timestamp + 1
    raise RuntimeError(f"more than {ACCOUNT_PAGES_MAX} pages of accounts")


async def reconcile(
    pool: asyncpg.Pool | asyncpg.Connection,
    ledger: Ledger,
    request_events_max: int = BATCH_EVENTS_MAX,
    on_mismatch: Callable[[Mismatch], None] | None = None,
) -> ReconcileReport:
    """Every intent and every user's history against the ledger."""
    report = ReconcileReport(on_mismatch=on_mismatch)
    await reconcile_intents(pool, ledger, report, request_events_max)
    await reconcile_history(pool, ledger, report)
    return report


def report_json(report: ReconcileReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "intents_checked": report.intents_checked,
        "users_checked": report.users_checked,
        "mismatch_count": report.mismatch_count,
        "mismatches": [m.to_json() for m in report.mismatches],
    }
