"""A small demo ledger: two funded users and one P2P payment with a fee, the DESIGN.md §4 legs.

Every id is derived from a name, so seeding twice changes nothing (the second run answers `exists`).
"""

from __future__ import annotations

import uuid

import tigerbeetle as tb

from ledger import accounts
from ledger.accounts import ACCOUNT_NAMESPACE
from ledger.filters import query_filter
from ledger.open import Ledger

CURRENCY = "THB"
DEMO_USERS = (1001, 1002)
OPENING_BALANCE_MINOR = 1_000_000  # 10,000.00 THB each
P2P_AMOUNT_MINOR = 15_000  # 150.00 THB
P2P_FEE_MINOR = 500  # 5.00 THB, paid by the sender on top
HOLD_TIMEOUT_S = 3600
TRANSFER_CODE_ADJUSTMENT = 900
TRANSFER_CODE_P2P = 100

OK_STATUSES = (tb.CreateTransferStatus.CREATED, tb.CreateTransferStatus.EXISTS)


def _transfer_id(name: str) -> int:
    return uuid.uuid5(ACCOUNT_NAMESPACE, f"demo-transfer:{name}").int


class DemoSeedError(RuntimeError):
    pass


class NotADemoLedgerError(DemoSeedError):
    """The ledger holds accounts the demo did not make: someone's money. The demo credits users 1001 and
    1002 10,000.00 THB from `adjustments:THB` with no intent behind it, so it seeds only an empty ledger
    (or its own, again)."""


async def check_demo_ledger(ledger: Ledger) -> None:
    """NotADemoLedgerError unless every account in the ledger is one the demo makes."""
    own = {named.id for named in _demo_accounts()}
    page = await ledger.query_accounts(query_filter(limit=len(own) + 1))
    foreign = [account.id for account in page if account.id not in own]
    if foreign or len(page) > len(own):
        raise NotADemoLedgerError(
            "the ledger holds accounts the demo did not make (a wallet's money): the demo seeds only an"
            " empty ledger; point PM_LEDGER_URL (or PM_DATABASE_URL) at a fresh one"
        )


def _demo_accounts() -> list[accounts.NamedAccount]:
    return [
        accounts.transit(CURRENCY),
        accounts.fees(CURRENCY),
        accounts.adjustments(CURRENCY),
        *(accounts.user(user_id, CURRENCY) for user_id in DEMO_USERS),
    ]


async def seed_demo(ledger: Ledger) -> dict[str, int]:
    """Create the demo accounts and movements; return the final balances by account name. Only on an empty
    ledger, or one the demo seeded before (NotADemoLedgerError)."""
    await check_demo_ledger(ledger)
    named = _demo_accounts()
    results = await ledger.create_accounts([n.to_tigerbeetle() for n in named])
    bad = [
        r.status.name
        for r in results
        if r.status not in (tb.CreateAccountStatus.CREATED, tb.CreateAccountStatus.EXISTS)
    ]
    if bad:
        raise DemoSeedError(f"demo accounts not created: {bad}")

    for step in _demo_steps():
        step_results = await ledger.create_transfers(step)
        if all(r.status in OK_STATUSES for r in step_results):
            continue
        # In a linked chain TigerBeetle answers `exists` for the first event of a chain applied
        # before and `linked_event_failed` for the rest: the chain is there if every id is.
        found = await ledger.lookup_transfers([t.id for t in step])
        if len(found) != len(step):
            raise DemoSeedError(f"demo transfers refused: {[r.status.name for r in step_results]}")

    found = await ledger.lookup_accounts([n.id for n in named])
    return {n.name: a.credits_posted - a.debits_posted for n, a in zip(named, found, strict=True)}


def _leg(name: str, debit: int, credit: int, amount: int, code: int, **fields: object) -> tb.Transfer:
    return tb.Transfer(
        id=_transfer_id(name),
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        ledger=accounts.currency_ledger(CURRENCY),
        code=code,
        **fields,
    )


def _demo_steps() -> tuple[list[tb.Transfer], ...]:
    """The three requests, in order: fund both users, hold the P2P payment, settle it (each a chain)."""
    transit = accounts.transit(CURRENCY).id
    fees = accounts.fees(CURRENCY).id
    adjustments = accounts.adjustments(CURRENCY).id
    sender, recipient = (accounts.user(u, CURRENCY).id for u in DEMO_USERS)
    linked = tb.TransferFlags.LINKED
    # Opening balances enter through transit too, so transit is back to zero after each chain.
    funding = []
    code = TRANSFER_CODE_ADJUSTMENT
    for user_id, account_id in zip(DEMO_USERS, (sender, recipient), strict=True):
        funding += [
            _leg(f"fund:{user_id}:in", adjustments, transit, OPENING_BALANCE_MINOR, code, flags=linked),
            _leg(f"fund:{user_id}:out", transit, account_id, OPENING_BALANCE_MINOR, code),
        ]
    hold_amount = P2P_AMOUNT_MINOR + P2P_FEE_MINOR
    pending = tb.TransferFlags.PENDING
    hold = _leg("p2p:hold", sender, transit, hold_amount, TRANSFER_CODE_P2P, flags=pending, timeout=HOLD_TIMEOUT_S)
    settle = [
        tb.Transfer(
            id=_transfer_id("p2p:post"),
            pending_id=_transfer_id("p2p:hold"),
            amount=tb.AMOUNT_MAX,
            flags=tb.TransferFlags.POST_PENDING_TRANSFER | linked,
        ),
        _leg("p2p:recipient", transit, recipient, P2P_AMOUNT_MINOR, TRANSFER_CODE_P2P, flags=linked),
        _leg("p2p:fee", transit, fees, P2P_FEE_MINOR, TRANSFER_CODE_P2P),
    ]
    return funding, [hold], settle
