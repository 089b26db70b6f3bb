"""Proves `open_ledger` refuses malformed or unknown ledger URLs with `LedgerUrlError` before connecting
anywhere.

Source: the contract in ledger/__init__.py ("LedgerUrlError: the URL is malformed or names an unknown
scheme") and the URL forms `memory://`, `postgresql://…`, `tigerbeetle://3000,3001?cluster=0`.
"""

from __future__ import annotations

import pytest

from ledger import LedgerUrlError, open_ledger


@pytest.mark.parametrize(
    "url",
    [
        "",
        "memory",
        "nosuch://somewhere",
        "http://127.0.0.1:3000",
        "tigerbeetle://",
        "tigerbeetle://?cluster=0",
        "tigerbeetle://3000?cluster=abc",
        "tigerbeetle://3000?cluster=-1",
    ],
    ids=[
        "empty",
        "no_scheme",
        "unknown_scheme",
        "http",
        "tb_no_address",
        "tb_no_address_with_cluster",
        "tb_cluster_not_a_number",
        "tb_cluster_negative",
    ],
)
async def test_malformed_url_raises_ledger_url_error(url):
    with pytest.raises(LedgerUrlError):
        async with open_ledger(url):
            pass


async def test_ledger_url_error_is_a_value_error():
    with pytest.raises(ValueError):
        async with open_ledger("nosuch://x"):
            pass
