"""Proves closing transfers close accounts, closed accounts reject transfers, and voiding the closing
transfer reopens them.

Sources: docs/reference/transfer.md @ 1a56b16f (`flags.closing_debit`/`closing_credit`: "requires a
two-phase transfer"; reversible "by voiding the pending transfer"), docs/reference/account.md @ 1a56b16f
(`flags.closed`: "the account will reject further transfers, except for voiding two-phase transfers
that are still pending"; "This flag can be set during the account creation"; "can be unset by voiding
the two-phase pending transfer that closed the account"), create_transfers.md @ c1c325e5
(`debit_account_already_closed`/`credit_account_already_closed` are transient errors). Where the
close-account recipe says pending transfers on a closed account "can't be posted or voided", this suite
follows account.md and src/state_machine.zig ("The only movement allowed in a closed account is voiding
a pending transfer").
"""

from __future__ import annotations

import dataclasses

import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    TF,
    TS,
    account,
    balances,
    create_accounts_ok,
    create_transfers_ok,
    get_account,
    new_accounts,
    post,
    transfer,
    transfer_statuses,
    unique_ledger,
    void,
)


async def setup(led):
    L = unique_ledger()
    bank, a, c = await new_accounts(led, L, [AF.NONE, AF.NONE, AF.NONE])
    return L, bank, a, c


async def close_debit(led, L, acct, control):
    closing = transfer(ledger=L, dr=acct, cr=control, amount=0, flags=TF.CLOSING_DEBIT | TF.PENDING)
    await create_transfers_ok(led, [closing])
    return closing


async def test_closing_debit_closes_the_debit_account(ledger):
    L, bank, a, c = await setup(ledger)
    await close_debit(ledger, L, a, c)
    assert (await get_account(ledger, a)).flags & AF.CLOSED
    assert not (await get_account(ledger, c)).flags & AF.CLOSED
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=bank, amount=1)]) == [
        TS.DEBIT_ACCOUNT_ALREADY_CLOSED
    ]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=bank, cr=a, amount=1)]) == [
        TS.CREDIT_ACCOUNT_ALREADY_CLOSED
    ]
    assert await transfer_statuses(
        ledger, [transfer(ledger=L, dr=a, cr=bank, amount=1, flags=TF.PENDING)]
    ) == [TS.DEBIT_ACCOUNT_ALREADY_CLOSED]
    assert await balances(ledger, a) == (0, 0, 0, 0)


async def test_closing_credit_closes_the_credit_account(ledger):
    L, bank, a, c = await setup(ledger)
    closing = transfer(ledger=L, dr=c, cr=a, amount=0, flags=TF.CLOSING_CREDIT | TF.PENDING)
    await create_transfers_ok(ledger, [closing])
    assert (await get_account(ledger, a)).flags & AF.CLOSED
    assert not (await get_account(ledger, c)).flags & AF.CLOSED
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=bank, cr=a, amount=1)]) == [
        TS.CREDIT_ACCOUNT_ALREADY_CLOSED
    ]


async def test_closing_both_sides_at_once(ledger):
    L, _bank, a, c = await setup(ledger)
    closing = transfer(
        ledger=L, dr=a, cr=c, amount=0, flags=TF.CLOSING_DEBIT | TF.CLOSING_CREDIT | TF.PENDING
    )
    await create_transfers_ok(ledger, [closing])
    assert all(x.flags & AF.CLOSED for x in await ledger.lookup_accounts([a, c]))


async def test_voiding_the_closing_transfer_reopens_the_account(ledger):
    L, bank, a, c = await setup(ledger)
    closing = await close_debit(ledger, L, a, c)
    assert await transfer_statuses(ledger, [void(closing)]) == [TS.CREATED]
    assert not (await get_account(ledger, a)).flags & AF.CLOSED
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=bank, cr=a, amount=1)]) == [TS.CREATED]


async def test_posting_the_closing_transfer_is_rejected(ledger):
    L, _bank, a, c = await setup(ledger)
    closing = await close_debit(ledger, L, a, c)
    assert await transfer_statuses(ledger, [post(closing, 0)]) == [TS.DEBIT_ACCOUNT_ALREADY_CLOSED]
    assert (await get_account(ledger, a)).flags & AF.CLOSED


async def test_pending_transfer_on_a_closed_account_can_be_voided_but_not_posted(ledger):
    L, bank, a, c = await setup(ledger)
    p1 = transfer(ledger=L, dr=a, cr=bank, amount=10, flags=TF.PENDING)
    p2 = transfer(ledger=L, dr=a, cr=bank, amount=10, flags=TF.PENDING)
    await create_transfers_ok(ledger, [p1, p2])
    await close_debit(ledger, L, a, c)
    assert await transfer_statuses(ledger, [post(p1)]) == [TS.DEBIT_ACCOUNT_ALREADY_CLOSED]
    assert await transfer_statuses(ledger, [void(p2)]) == [TS.CREATED]
    assert await balances(ledger, a) == (10, 0, 0, 0)


async def test_account_created_closed_rejects_transfers(ledger):
    L, bank, _, _ = await setup(ledger)
    closed = account(ledger=L, flags=AF.CLOSED)
    await create_accounts_ok(ledger, [closed])
    assert (await get_account(ledger, closed.id)).flags == AF.CLOSED
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=bank, cr=closed.id, amount=1)]) == [
        TS.CREDIT_ACCOUNT_ALREADY_CLOSED
    ]


async def test_closing_an_already_closed_account_fails(ledger):
    L, _bank, a, c = await setup(ledger)
    await close_debit(ledger, L, a, c)
    again = transfer(ledger=L, dr=a, cr=c, amount=0, flags=TF.CLOSING_DEBIT | TF.PENDING)
    assert await transfer_statuses(ledger, [again]) == [TS.DEBIT_ACCOUNT_ALREADY_CLOSED]


async def test_already_closed_is_transient_and_burns_the_id(ledger):
    L, bank, a, c = await setup(ledger)
    closing = await close_debit(ledger, L, a, c)
    t = transfer(ledger=L, dr=bank, cr=a, amount=1)
    assert await transfer_statuses(ledger, [t]) == [TS.CREDIT_ACCOUNT_ALREADY_CLOSED]
    await create_transfers_ok(ledger, [void(closing)])
    assert await transfer_statuses(ledger, [dataclasses.replace(t)]) == [TS.ID_ALREADY_FAILED]
    assert await transfer_statuses(ledger, [dataclasses.replace(t, id=tb.id())]) == [TS.CREATED]


async def test_precedence_already_closed_before_balance_checks(ledger):
    L = unique_ledger()
    a, c = await new_accounts(
        ledger, L, [AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.CREDITS_MUST_NOT_EXCEED_DEBITS]
    )
    closing = transfer(
        ledger=L, dr=a, cr=c, amount=0, flags=TF.CLOSING_DEBIT | TF.CLOSING_CREDIT | TF.PENDING
    )
    await create_transfers_ok(ledger, [closing])
    # Would also exceed a's credits and c's debits.
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=c, amount=5)]) == [
        TS.DEBIT_ACCOUNT_ALREADY_CLOSED
    ]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=c, cr=a, amount=5)]) == [
        TS.DEBIT_ACCOUNT_ALREADY_CLOSED
    ]


async def test_closing_in_a_failed_chain_leaves_the_account_open(ledger):
    L, _bank, a, c = await setup(ledger)
    chain = [
        transfer(ledger=L, dr=a, cr=c, amount=0, flags=TF.CLOSING_DEBIT | TF.PENDING | TF.LINKED),
        transfer(ledger=L, dr=a, cr=c, amount=1, code=0),
    ]
    assert await transfer_statuses(ledger, chain) == [TS.LINKED_EVENT_FAILED, TS.CODE_MUST_NOT_BE_ZERO]
    assert not (await get_account(ledger, a)).flags & AF.CLOSED
