"""Account ids are derived exactly as DESIGN.md §4 says, and each kind carries its ledger, code and flags."""

from __future__ import annotations

import uuid

import pytest
import tigerbeetle as tb
from hypothesis import given
from hypothesis import strategies as st

from ledger import accounts
from ledger.accounts import ACCOUNT_NAMESPACE, AccountKind, account_id


def test_namespace_is_uuid5_of_onewallet_tb() -> None:
    assert ACCOUNT_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_DNS, "onewallet-tb")
    assert str(ACCOUNT_NAMESPACE) == "34ddb9ca-cf45-5394-be47-21d427adc662"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("transit:THB", 256076789429318492673962637889979100045),
        ("user:42:THB", 73506546283685393927358213637252843152),
    ],
)
def test_account_id_test_vectors(name: str, expected: int) -> None:
    assert account_id(name) == expected


def test_named_accounts_follow_the_design_names() -> None:
    assert accounts.user(42, "THB").name == "user:42:THB"
    assert accounts.transit("THB").name == "transit:THB"
    assert accounts.fees("THB").name == "fees:THB"
    assert accounts.psp("IPPS_TRANSFER", "THB").name == "psp:IPPS_TRANSFER:THB"
    assert accounts.merchant(7, "THB").name == "merchant:7:THB"
    assert accounts.adjustments("THB").name == "adjustments:THB"
    assert accounts.user(42, "THB").id == account_id("user:42:THB")


def test_user_and_merchant_accounts_cannot_be_overdrawn() -> None:
    for named in (accounts.user(1, "THB"), accounts.merchant(1, "THB")):
        account = named.to_tigerbeetle()
        assert account.flags & tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
        assert account.flags & tb.AccountFlags.HISTORY
    transit = accounts.transit("THB").to_tigerbeetle()
    assert not transit.flags & tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS


def test_ledger_is_iso_4217_numeric_and_code_is_the_kind() -> None:
    account = accounts.fees("THB").to_tigerbeetle()
    assert account.ledger == 764
    assert account.code == AccountKind.FEES
    assert account.timestamp == 0


def test_unknown_currency_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unsupported currency 'XXX'"):
        accounts.transit("XXX").to_tigerbeetle()


@given(st.text(min_size=1, max_size=80))
def test_derived_ids_are_rfc4122_uuid5(name: str) -> None:
    assert accounts.uuid5_int(name) == uuid.uuid5(accounts.ACCOUNT_NAMESPACE, name).int
