"""Which objects a query returns: TigerBeetle's `AccountFilter` and `QueryFilter` rules.

An invalid filter is not an error in TigerBeetle: the query answers with no results. The rules
below are those of the state machine (`get_scan_from_account_filter`,
`get_scan_from_query_filter`); zero in a filter field means "any".
"""

from __future__ import annotations

import tigerbeetle as tb

U64_MAX = (1 << 64) - 1
U128_MAX = (1 << 128) - 1
# One reply holds at most this many objects: 1 MiB less its 256-byte header and a 128-byte multi-batch
# trailer, in 128-byte objects. TigerBeetle caps a filter's `limit` here instead of refusing it: its client
# expects min(limit, this) results (tb_client `Operation.result_count_expected`) and its state machine
# scans as many, so no limit that fits the u32 field raises TooMuchDataError (tests/conformance/test_query_limit.py).
QUERY_RESULTS_MAX = 8189

_ACCOUNT_FILTER_FLAGS = tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS | tb.AccountFilterFlags.REVERSED


def query_filter(
    *, ledger: int = 0, timestamp_min: int = 0, limit: int = 1, flags: tb.QueryFilterFlags = tb.QueryFilterFlags.NONE
) -> tb.QueryFilter:
    """A QueryFilter on at most a ledger and a start (every other field 0: any), for our own queries."""
    return tb.QueryFilter(
        user_data_128=0, user_data_64=0, user_data_32=0, ledger=ledger, code=0,
        timestamp_min=timestamp_min, timestamp_max=0, limit=limit, flags=flags,
    )  # fmt: skip


def account_filter_valid(f: tb.AccountFilter) -> bool:
    flags = int(f.flags)
    return (
        f.account_id not in (0, U128_MAX)
        and f.timestamp_min != U64_MAX
        and f.timestamp_max != U64_MAX
        and (f.timestamp_max == 0 or f.timestamp_min <= f.timestamp_max)
        and f.limit != 0
        and bool(flags & (tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS))
        and flags & ~int(_ACCOUNT_FILTER_FLAGS) == 0
    )


def query_filter_valid(f: tb.QueryFilter) -> bool:
    return (
        f.timestamp_min != U64_MAX
        and f.timestamp_max != U64_MAX
        and (f.timestamp_max == 0 or f.timestamp_min <= f.timestamp_max)
        and f.limit != 0
        and int(f.flags) & ~int(tb.QueryFilterFlags.REVERSED) == 0
    )


def result_limit(limit: int) -> int:
    """How many objects a valid filter may return: its limit, capped at one reply."""
    assert 0 < limit < 1 << 32, limit  # the u32 check ran, and a zero limit answered nothing before this
    return min(limit, QUERY_RESULTS_MAX)


def timestamp_range(timestamp_min: int, timestamp_max: int) -> tuple[int, int]:
    return (timestamp_min or 1, timestamp_max or U64_MAX)


def transfer_matches_account_filter(t: tb.Transfer, f: tb.AccountFilter) -> bool:
    flags = f.flags
    side = (flags & tb.AccountFilterFlags.DEBITS and t.debit_account_id == f.account_id) or (
        flags & tb.AccountFilterFlags.CREDITS and t.credit_account_id == f.account_id
    )
    low, high = timestamp_range(f.timestamp_min, f.timestamp_max)
    return bool(
        side
        and low <= t.timestamp <= high
        and (f.user_data_128 == 0 or t.user_data_128 == f.user_data_128)
        and (f.user_data_64 == 0 or t.user_data_64 == f.user_data_64)
        and (f.user_data_32 == 0 or t.user_data_32 == f.user_data_32)
        and (f.code == 0 or t.code == f.code)
    )


def matches_query(obj: tb.Account | tb.Transfer, f: tb.QueryFilter) -> bool:
    low, high = timestamp_range(f.timestamp_min, f.timestamp_max)
    return (
        low <= obj.timestamp <= high
        and (f.user_data_128 == 0 or obj.user_data_128 == f.user_data_128)
        and (f.user_data_64 == 0 or obj.user_data_64 == f.user_data_64)
        and (f.user_data_32 == 0 or obj.user_data_32 == f.user_data_32)
        and (f.ledger == 0 or obj.ledger == f.ledger)
        and (f.code == 0 or obj.code == f.code)
    )
