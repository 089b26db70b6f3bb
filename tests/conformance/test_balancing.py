"""Proves `balancing_debit`/`balancing_credit` clamp the amount to the account's balance as TigerBeetle
0.17 documents.

Source: docs/reference/transfer.md @ 1a56b16f, `flags.balancing_debit`: "Transfer at most amount —
automatically transferring less than amount as necessary such that debit_account.debits_pending +
debit_account.debits_posted ≤ debit_account.credits_posted. The amount of the recorded transfer is set
to the actual amount that was transferred"; "Retrying a balancing transfer will return
exists_with_different_amount only when the maximum amount passed to create_transfers is insufficient
to fulfill the amount that was actually transferred. Otherwise it may return exists". The pre-0.16
behaviours (amount 0 meaning "as much as possible", exceeds_credits when nothing can move) are
documented only under "Client release < 0.16.0", so a balancing transfer with nothing to move is
created with amount 0. Recipes: docs/coding/recipes/close-account.md @ 858f700b,
docs/coding/recipes/balance-bounds.md @ 4b2947a0.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.ledger import (
    AF,
    AMOUNT_MAX,
    TF,
    TS,
    balances,
    create_transfers_ok,
    fund,
    get_transfer,
    new_accounts,
    transfer,
    transfer_statuses,
    unique_ledger,
)

DMNEC = AF.DEBITS_MUST_NOT_EXCEED_CREDITS
CMNED = AF.CREDITS_MUST_NOT_EXCEED_DEBITS


@pytest.mark.parametrize("a_flags", [DMNEC, AF.NONE], ids=["with_limit_flag", "without_flags"])
async def test_balancing_debit_moves_at_most_the_net_credit_balance(ledger, a_flags):
    L = unique_ledger()
    bank, a, c = await new_accounts(ledger, L, [AF.NONE, a_flags, AF.NONE])
    await fund(ledger, ledger=L, source=bank, target=a, amount=100)
    await fund(ledger, ledger=L, source=a, target=bank, amount=30)
    t = transfer(ledger=L, dr=a, cr=c, amount=1000, flags=TF.BALANCING_DEBIT)
    assert await transfer_statuses(ledger, [t]) == [TS.CREATED]
    assert (await get_transfer(ledger, t.id)).amount == 70
    assert await balances(ledger, a) == (0, 100, 0, 100)
    assert await balances(ledger, c) == (0, 0, 0, 70)


async def test_balancing_debit_below_the_balance_moves_the_full_amount(ledger):
    L = unique_ledger()
    bank, a, c = await new_accounts(ledger, L, [AF.NONE, DMNEC, AF.NONE])
    await fund(ledger, ledger=L, source=bank, target=a, amount=100)
    t = transfer(ledger=L, dr=a, cr=c, amount=40, flags=TF.BALANCING_DEBIT)
    await create_transfers_ok(ledger, [t])
    assert (await get_transfer(ledger, t.id)).amount == 40


async def test_balancing_debit_counts_pending_debits(ledger):
    L = unique_ledger()
    bank, a, c = await new_accounts(ledger, L, [AF.NONE, DMNEC, AF.NONE])
    await fund(ledger, ledger=L, source=bank, target=a, amount=100)
    await create_transfers_ok(ledger, [transfer(ledger=L, dr=a, cr=c, amount=40, flags=TF.PENDING)])
    t = transfer(ledger=L, dr=a, cr=c, amount=AMOUNT_MAX, flags=TF.BALANCING_DEBIT)
    await create_transfers_ok(ledger, [t])
    assert (await get_transfer(ledger, t.id)).amount == 60
    assert await balances(ledger, a) == (40, 60, 0, 100)


async def test_balancing_debit_with_nothing_to_move_is_created_with_amount_zero(ledger):
    L = unique_ledger()
    a, c = await new_accounts(ledger, L, [DMNEC, AF.NONE])
    t = transfer(ledger=L, dr=a, cr=c, amount=AMOUNT_MAX, flags=TF.BALANCING_DEBIT)
    assert await transfer_statuses(ledger, [t]) == [TS.CREATED]
    assert (await get_transfer(ledger, t.id)).amount == 0
    assert await balances(ledger, a) == (0, 0, 0, 0)


@pytest.mark.parametrize("b_flags", [CMNED, AF.NONE], ids=["with_limit_flag", "without_flags"])
async def test_balancing_credit_moves_at_most_the_net_debit_balance(ledger, b_flags):
    L = unique_ledger()
    bank, b, c = await new_accounts(ledger, L, [AF.NONE, b_flags, AF.NONE])
    await fund(ledger, ledger=L, source=b, target=bank, amount=100)
    await fund(ledger, ledger=L, source=bank, target=b, amount=30)
    t = transfer(ledger=L, dr=c, cr=b, amount=AMOUNT_MAX, flags=TF.BALANCING_CREDIT)
    assert await transfer_statuses(ledger, [t]) == [TS.CREATED]
    assert (await get_transfer(ledger, t.id)).amount == 70
    assert await balances(ledger, b) == (0, 100, 0, 100)


async def test_balancing_debit_and_credit_together_take_the_smaller_bound(ledger):
    L = unique_ledger()
    bank, a, b = await new_accounts(ledger, L, [AF.NONE, DMNEC, CMNED])
    await fund(ledger, ledger=L, source=bank, target=a, amount=50)  # a may send 50
    await fund(ledger, ledger=L, source=b, target=bank, amount=20)  # b may receive 20
    t = transfer(ledger=L, dr=a, cr=b, amount=AMOUNT_MAX, flags=TF.BALANCING_DEBIT | TF.BALANCING_CREDIT)
    await create_transfers_ok(ledger, [t])
    assert (await get_transfer(ledger, t.id)).amount == 20


async def test_pending_balancing_transfer_reserves_the_clamped_amount(ledger):
    L = unique_ledger()
    bank, a, c = await new_accounts(ledger, L, [AF.NONE, DMNEC, AF.NONE])
    await fund(ledger, ledger=L, source=bank, target=a, amount=25)
    t = transfer(ledger=L, dr=a, cr=c, amount=100, flags=TF.BALANCING_DEBIT | TF.PENDING)
    await create_transfers_ok(ledger, [t])
    assert (await get_transfer(ledger, t.id)).amount == 25
    assert await balances(ledger, a) == (25, 0, 0, 25)
    assert await balances(ledger, c) == (0, 0, 25, 0)


async def test_balancing_transfer_retry(ledger):
    L = unique_ledger()
    bank, a, c = await new_accounts(ledger, L, [AF.NONE, DMNEC, AF.NONE])
    await fund(ledger, ledger=L, source=bank, target=a, amount=70)
    t = transfer(ledger=L, dr=a, cr=c, amount=1000, flags=TF.BALANCING_DEBIT)
    await create_transfers_ok(ledger, [t])  # recorded amount: 70
    assert await transfer_statuses(ledger, [dataclasses.replace(t)]) == [TS.EXISTS]
    assert await transfer_statuses(ledger, [dataclasses.replace(t, amount=70)]) == [TS.EXISTS]
    assert await transfer_statuses(ledger, [dataclasses.replace(t, amount=AMOUNT_MAX)]) == [TS.EXISTS]
    assert await transfer_statuses(ledger, [dataclasses.replace(t, amount=69)]) == [
        TS.EXISTS_WITH_DIFFERENT_AMOUNT
    ]
    assert await balances(ledger, a) == (0, 70, 0, 70)


async def test_close_account_recipe(ledger):
    # docs/coding/recipes/close-account.md, with its exact numbers.
    L = unique_ledger()
    src, a, b, c = await new_accounts(ledger, L, [AF.NONE, DMNEC, CMNED, AF.NONE])
    await fund(ledger, ledger=L, source=src, target=a, amount=20)
    await fund(ledger, ledger=L, source=a, target=src, amount=10)
    await fund(ledger, ledger=L, source=b, target=src, amount=30)
    await fund(ledger, ledger=L, source=src, target=b, amount=5)
    t1 = transfer(ledger=L, dr=a, cr=c, amount=AMOUNT_MAX, flags=TF.BALANCING_DEBIT | TF.LINKED)
    t2 = transfer(ledger=L, dr=a, cr=c, amount=0, flags=TF.CLOSING_DEBIT | TF.PENDING)
    t3 = transfer(ledger=L, dr=c, cr=b, amount=AMOUNT_MAX, flags=TF.BALANCING_CREDIT | TF.LINKED)
    t4 = transfer(ledger=L, dr=c, cr=b, amount=0, flags=TF.CLOSING_CREDIT | TF.PENDING)
    assert await transfer_statuses(ledger, [t1, t2, t3, t4]) == [TS.CREATED] * 4
    assert [(await get_transfer(ledger, t.id)).amount for t in (t1, t2, t3, t4)] == [10, 0, 25, 0]
    assert await balances(ledger, a) == (0, 20, 0, 20)
    assert await balances(ledger, b) == (0, 30, 0, 30)
    assert await balances(ledger, c) == (0, 25, 0, 10)
    accounts = {x.id: x for x in await ledger.lookup_accounts([a, b, c])}
    assert accounts[a].flags == DMNEC | AF.CLOSED
    assert accounts[b].flags == CMNED | AF.CLOSED
    assert accounts[c].flags == AF.NONE

    t5 = transfer(ledger=L, dr=a, cr=c, amount=0, pending_id=t2.id, flags=TF.VOID_PENDING_TRANSFER)
    t6 = transfer(ledger=L, dr=c, cr=b, amount=0, pending_id=t4.id, flags=TF.VOID_PENDING_TRANSFER)
    assert await transfer_statuses(ledger, [t5, t6]) == [TS.CREATED, TS.CREATED]
    accounts = {x.id: x for x in await ledger.lookup_accounts([a, b])}
    assert accounts[a].flags == DMNEC
    assert accounts[b].flags == CMNED
    assert await balances(ledger, a) == (0, 20, 0, 20)
    assert await balances(ledger, c) == (0, 25, 0, 10)


async def _bounded_transfer(led, L, source, destination, control, operator, amount, limit):
    """balance-bounds.md, "If the Target Account Has a Credit Balance": 5 linked transfers."""
    t3 = transfer(
        ledger=L,
        dr=destination,
        cr=control,
        amount=AMOUNT_MAX,
        flags=TF.LINKED | TF.BALANCING_DEBIT | TF.PENDING,
    )
    chain = [
        transfer(ledger=L, dr=source, cr=destination, amount=amount, flags=TF.LINKED),
        transfer(ledger=L, dr=control, cr=operator, amount=limit, flags=TF.LINKED),
        t3,
        transfer(ledger=L, pending_id=t3.id, flags=TF.LINKED | TF.VOID_PENDING_TRANSFER),
        transfer(ledger=L, dr=operator, cr=control, amount=limit),
    ]
    return await transfer_statuses(led, chain)


async def test_balance_bounds_recipe(ledger):
    L = unique_ledger()
    source, destination, control, operator = await new_accounts(ledger, L, [AF.NONE, DMNEC, CMNED, AF.NONE])
    assert (
        await _bounded_transfer(ledger, L, source, destination, control, operator, 80, 100)
        == [TS.CREATED] * 5
    )
    assert await balances(ledger, destination) == (0, 0, 0, 80)
    assert await balances(ledger, control) == (0, 100, 0, 100)  # net zero again

    over = await _bounded_transfer(ledger, L, source, destination, control, operator, 30, 100)
    assert over == [
        TS.LINKED_EVENT_FAILED,
        TS.LINKED_EVENT_FAILED,
        TS.EXCEEDS_DEBITS,
        TS.LINKED_EVENT_FAILED,
        TS.LINKED_EVENT_FAILED,
    ]
    assert await balances(ledger, destination) == (0, 0, 0, 80)
    assert await balances(ledger, control) == (0, 100, 0, 100)

    assert (
        await _bounded_transfer(ledger, L, source, destination, control, operator, 20, 100)
        == [TS.CREATED] * 5
    )
    assert await balances(ledger, destination) == (0, 0, 0, 100)
