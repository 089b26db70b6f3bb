"""Proves the balance-limit flags reject exactly the transfers TigerBeetle documents, and `history`
enables balance history.

Sources: docs/reference/account.md @ 1a56b16f (`flags.debits_must_not_exceed_credits`: rejected "when
account.debits_pending + account.debits_posted + transfer.amount > account.credits_posted";
`flags.credits_must_not_exceed_debits`: "when account.credits_pending + account.credits_posted +
transfer.amount > account.debits_posted"; `flags.history`: get_account_balances "only works for
accounts with this flag set"), create_transfers.md @ c1c325e5 (`exceeds_credits`, `exceeds_debits`).
"""

from __future__ import annotations

from tests.support.ledger import (
    AF,
    TF,
    TS,
    account_filter,
    balances,
    create_transfers_ok,
    fund,
    new_accounts,
    transfer,
    transfer_statuses,
    unique_ledger,
)

DMNEC = AF.DEBITS_MUST_NOT_EXCEED_CREDITS
CMNED = AF.CREDITS_MUST_NOT_EXCEED_DEBITS


async def test_debits_must_not_exceed_credits(ledger):
    L = unique_ledger()
    bank, a, b = await new_accounts(ledger, L, [AF.NONE, DMNEC, AF.NONE])
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1)]) == [TS.EXCEEDS_CREDITS]
    await fund(ledger, ledger=L, source=bank, target=a, amount=100)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=101)]) == [
        TS.EXCEEDS_CREDITS
    ]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=100)]) == [
        TS.CREATED
    ]  # equal is fine
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1)]) == [TS.EXCEEDS_CREDITS]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=0)]) == [TS.CREATED]
    assert await balances(ledger, a) == (0, 100, 0, 100)


async def test_credits_must_not_exceed_debits(ledger):
    L = unique_ledger()
    bank, a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE, CMNED])
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1)]) == [TS.EXCEEDS_DEBITS]
    await fund(ledger, ledger=L, source=b, target=bank, amount=100)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=101)]) == [
        TS.EXCEEDS_DEBITS
    ]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=100)]) == [TS.CREATED]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1)]) == [TS.EXCEEDS_DEBITS]
    assert await balances(ledger, b) == (0, 100, 0, 100)


async def test_pending_credits_count_against_credits_must_not_exceed_debits(ledger):
    L = unique_ledger()
    bank, a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE, CMNED])
    await fund(ledger, ledger=L, source=b, target=bank, amount=100)
    await create_transfers_ok(ledger, [transfer(ledger=L, dr=a, cr=b, amount=60, flags=TF.PENDING)])
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=41)]) == [TS.EXCEEDS_DEBITS]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=40)]) == [TS.CREATED]


async def test_limits_only_apply_to_their_own_side(ledger):
    # A debits_must_not_exceed_credits account may be credited freely, and vice versa.
    L = unique_ledger()
    bank, a, b = await new_accounts(ledger, L, [AF.NONE, DMNEC, CMNED])
    assert await transfer_statuses(
        ledger,
        [
            transfer(ledger=L, dr=bank, cr=a, amount=10),
            transfer(ledger=L, dr=b, cr=bank, amount=10),
        ],
    ) == [TS.CREATED, TS.CREATED]


async def test_accounts_without_limits_go_negative_either_way(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    assert await transfer_statuses(
        ledger,
        [
            transfer(ledger=L, dr=a, cr=b, amount=1000),
            transfer(ledger=L, dr=b, cr=a, amount=10),
        ],
    ) == [TS.CREATED, TS.CREATED]
    assert await balances(ledger, a) == (0, 1000, 0, 10)


async def test_history_flag_enables_account_balances(ledger):
    L = unique_ledger()
    with_history, without = await new_accounts(ledger, L, [AF.HISTORY, AF.NONE])
    await fund(ledger, ledger=L, source=without, target=with_history, amount=5)
    assert len(await ledger.get_account_balances(account_filter(with_history))) == 1
    assert await ledger.get_account_balances(account_filter(without)) == []
