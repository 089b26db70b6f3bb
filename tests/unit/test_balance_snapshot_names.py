"""What the balance snapshot calls an account without asking anyone: its kind from its ledger code (every
AccountKind, lower case, as the snapshot table and GET /admin/balances accept them; any other code
`unknown`), the accounts every currency has named from their derived ids, and a user's or merchant's id
read from its name."""

from __future__ import annotations

import channels
from consumers.balance_snapshot import _owner_id, fixed_accounts, kind_name
from ledger import accounts
from ledger.accounts import CURRENCY_LEDGER, AccountKind
from pm.store.balance_snapshots import ACCOUNT_KINDS


def test_every_account_kind_has_its_name_and_other_codes_are_unknown() -> None:
    assert {kind_name(int(kind)) for kind in AccountKind} | {"unknown"} == set(ACCOUNT_KINDS)
    assert kind_name(int(AccountKind.PSP_CLEARING)) == "psp_clearing"
    assert kind_name(0) == kind_name(99) == "unknown"


def test_the_fixed_accounts_are_every_currencys_own_and_no_users() -> None:
    fixed = fixed_accounts()
    for currency in CURRENCY_LEDGER:
        for account in (accounts.transit(currency), accounts.fees(currency), accounts.adjustments(currency),
                        accounts.psp("IPPS_TRANSFER", currency), accounts.psp("QP_TRANSFER", currency)):  # fmt: skip
            assert fixed[account.id] == account
    assert len(fixed) == len(CURRENCY_LEDGER) * (3 + len(channels.REGISTRY))
    assert accounts.user(42, "THB").id not in fixed and accounts.merchant(7, "THB").id not in fixed


def test_owners_are_read_from_user_and_merchant_names_only() -> None:
    assert _owner_id(accounts.user(42, "THB")) == 42
    assert _owner_id(accounts.merchant(10**15, "USD")) == 10**15
    assert _owner_id(accounts.transit("THB")) is None
    assert _owner_id(accounts.psp("QP_TRANSFER", "THB")) is None
