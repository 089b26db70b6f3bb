"""Field bounds, checked before anything is written, as the official client checks them.

The official client refuses a value that does not fit its field (`tb.IntegerOverflowError`) while
encoding the request, so nothing reaches the cluster. The embedded backends do the same, so a
caller sees one behaviour whichever backend is configured.
"""

from __future__ import annotations

import tigerbeetle as tb

from ledger.errors import TooMuchDataError

BATCH_EVENTS_MAX = 8189  # TigerBeetle's events per request (1 MiB message, 128-byte events)

_ACCOUNT_FIELDS = (
    ("id", 128),
    ("debits_pending", 128),
    ("debits_posted", 128),
    ("credits_pending", 128),
    ("credits_posted", 128),
    ("user_data_128", 128),
    ("user_data_64", 64),
    ("user_data_32", 32),
    ("ledger", 32),
    ("code", 16),
    ("flags", 16),
    ("timestamp", 64),
)
_TRANSFER_FIELDS = (
    ("id", 128),
    ("debit_account_id", 128),
    ("credit_account_id", 128),
    ("amount", 128),
    ("pending_id", 128),
    ("user_data_128", 128),
    ("user_data_64", 64),
    ("user_data_32", 32),
    ("timeout", 32),
    ("ledger", 32),
    ("code", 16),
    ("flags", 16),
    ("timestamp", 64),
)
_FILTER_FIELDS = (
    ("account_id", 128),
    ("user_data_128", 128),
    ("user_data_64", 64),
    ("user_data_32", 32),
    ("code", 16),
    ("timestamp_min", 64),
    ("timestamp_max", 64),
    ("limit", 32),
    ("flags", 32),
)
_QUERY_FIELDS = (
    ("user_data_128", 128),
    ("user_data_64", 64),
    ("user_data_32", 32),
    ("ledger", 32),
    ("code", 16),
    ("timestamp_min", 64),
    ("timestamp_max", 64),
    ("limit", 32),
    ("flags", 32),
)
_LIMITS = {bits: (1 << bits) - 1 for bits in (16, 32, 64, 128)}


def _check(obj: object, fields: tuple[tuple[str, int], ...]) -> None:
    for name, bits in fields:
        number = int(getattr(obj, name))
        if number > _LIMITS[bits]:
            raise tb.IntegerOverflowError(f"{name}=={number} is too large to fit in {bits} bits")
        if number < 0:
            raise tb.IntegerOverflowError(f"{name}=={number} cannot be negative")


def check_batch_size(count: int) -> None:
    if count > BATCH_EVENTS_MAX:
        raise TooMuchDataError(f"{count} events in one request; at most {BATCH_EVENTS_MAX} are allowed")


def check_accounts(accounts: list[tb.Account]) -> None:
    check_batch_size(len(accounts))
    for account in accounts:
        _check(account, _ACCOUNT_FIELDS)


def check_transfers(transfers: list[tb.Transfer]) -> None:
    check_batch_size(len(transfers))
    u128, u64, u32, u16 = _LIMITS[128], _LIMITS[64], _LIMITS[32], _LIMITS[16]
    for t in transfers:
        # One chained comparison per transfer: this runs for every transfer on the hot path.
        if not (
            0 <= t.id <= u128
            and 0 <= t.debit_account_id <= u128
            and 0 <= t.credit_account_id <= u128
            and 0 <= t.amount <= u128
            and 0 <= t.pending_id <= u128
            and 0 <= t.user_data_128 <= u128
            and 0 <= t.user_data_64 <= u64
            and 0 <= t.user_data_32 <= u32
            and 0 <= t.timeout <= u32
            and 0 <= t.ledger <= u32
            and 0 <= t.code <= u16
            and 0 <= t.flags <= u16
            and 0 <= t.timestamp <= u64
        ):
            _check(t, _TRANSFER_FIELDS)  # raises, naming the field


def check_ids(ids: list[int]) -> None:
    check_batch_size(len(ids))
    for number in ids:
        if number > _LIMITS[128] or number < 0:
            raise tb.IntegerOverflowError(f"id=={number} does not fit in 128 bits")


def check_account_filter(f: tb.AccountFilter) -> None:
    _check(f, _FILTER_FIELDS)


def check_query_filter(f: tb.QueryFilter) -> None:
    _check(f, _QUERY_FIELDS)
