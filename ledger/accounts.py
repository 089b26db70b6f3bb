"""Account names, kinds and derived ids (DESIGN.md §4).

Every service derives the same 128-bit TigerBeetle id from an account's name, so no id table is
needed and every retry addresses the same account.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import uuid
from dataclasses import dataclass

import tigerbeetle as tb

# = 34ddb9ca-cf45-5394-be47-21d427adc662; printed in the README so other services can derive the ids.
ACCOUNT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "onewallet-tb")

# ISO 4217 numeric codes: TigerBeetle's `ledger` field. Add a currency here to support it.
CURRENCY_LEDGER: dict[str, int] = {"THB": 764, "USD": 840, "EUR": 978}


_NAMESPACE_BYTES = ACCOUNT_NAMESPACE.bytes
_UUID5_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID5_SET = (0x8000 << 48) | (5 << 76)  # RFC 4122 variant, version 5


def uuid5_int(name: str, namespace_bytes: bytes = _NAMESPACE_BYTES) -> int:
    """`uuid.uuid5(namespace, name).int` (ACCOUNT_NAMESPACE unless given), without building UUID objects:
    ids are derived for every leg of every intent, and uuid.UUID's checks cost more than the SHA-1 itself."""
    digest = hashlib.sha1(namespace_bytes + name.encode()).digest()
    return (int.from_bytes(digest[:16], "big") & _UUID5_CLEAR) | _UUID5_SET


@functools.lru_cache(maxsize=1 << 16)  # a pure function, called for every leg of every intent
def account_id(name: str) -> int:
    """The TigerBeetle id of the account called `name`: uuid5(uuid5(DNS, "onewallet-tb"), name).int."""
    assert name, "account name must not be empty"
    return uuid5_int(name)


def currency_ledger(currency: str) -> int:
    try:
        return CURRENCY_LEDGER[currency]
    except KeyError:
        raise ValueError(f"unsupported currency {currency!r}; known: {sorted(CURRENCY_LEDGER)}") from None


class AccountKind(enum.IntEnum):
    """TigerBeetle `Account.code`: what kind of account this is."""

    USER = 1
    TRANSIT = 2
    FEES = 3
    PSP_CLEARING = 4
    MERCHANT = 5
    ADJUSTMENTS = 6


# Users and merchants hold customer money: never overdrawn. Every kind keeps balance history so
# `get_account_balances` can answer "what was the balance at time t" for statements and audits.
_KIND_FLAGS: dict[AccountKind, tb.AccountFlags] = {
    AccountKind.USER: tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | tb.AccountFlags.HISTORY,
    AccountKind.MERCHANT: tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | tb.AccountFlags.HISTORY,
    AccountKind.TRANSIT: tb.AccountFlags.HISTORY,
    AccountKind.FEES: tb.AccountFlags.HISTORY,
    AccountKind.PSP_CLEARING: tb.AccountFlags.HISTORY,
    AccountKind.ADJUSTMENTS: tb.AccountFlags.HISTORY,
}


@dataclass(frozen=True, slots=True)
class NamedAccount:
    name: str
    kind: AccountKind
    currency: str

    @property
    def id(self) -> int:
        return account_id(self.name)

    @property
    def ledger(self) -> int:
        return currency_ledger(self.currency)

    def to_tigerbeetle(self) -> tb.Account:
        return tb.Account(id=self.id, ledger=self.ledger, code=int(self.kind), flags=_KIND_FLAGS[self.kind])


def user(user_id: int, currency: str) -> NamedAccount:
    assert user_id > 0, user_id
    return NamedAccount(f"user:{user_id}:{currency}", AccountKind.USER, currency)


def transit(currency: str) -> NamedAccount:
    return NamedAccount(f"transit:{currency}", AccountKind.TRANSIT, currency)


def fees(currency: str) -> NamedAccount:
    return NamedAccount(f"fees:{currency}", AccountKind.FEES, currency)


def psp(channel: str, currency: str) -> NamedAccount:
    return NamedAccount(f"psp:{channel}:{currency}", AccountKind.PSP_CLEARING, currency)


def merchant(merchant_id: int, currency: str) -> NamedAccount:
    assert merchant_id > 0, merchant_id
    return NamedAccount(f"merchant:{merchant_id}:{currency}", AccountKind.MERCHANT, currency)


def adjustments(currency: str) -> NamedAccount:
    return NamedAccount(f"adjustments:{currency}", AccountKind.ADJUSTMENTS, currency)


def transfer_id(intent_id: uuid.UUID, leg: str) -> int:
    """The TigerBeetle id of one leg of an intent: derived, so every retry of a step sends the same id.

    Account names never start with "transfer:", so a transfer id cannot collide with an account id.
    """
    assert leg and ":" not in leg, leg
    return uuid5_int(f"transfer:{intent_id}:{leg}")
