"""Proves a request of 8189 events is accepted and one of 8190 raises `TooMuchDataError` without writing
anything.

Sources: the 0.17.9 Python client README ("The maximum batch size is set in the TigerBeetle server.
The default is 8189."), docs/reference/requests/query_accounts.md ("a full batch (8189)"); the official
client raises `tb.TooMuchDataError` for a request that does not fit (client.py, PacketStatus
TOO_MUCH_DATA) before anything is applied, and `ledger.TooMuchDataError` is its drop-in
(ledger/__init__.py). A TigerBeetle server started with `--development` has smaller batches
(DESIGN.md §10), so run the `tigerbeetle` backend of this suite against a production-configured cluster.
"""

from __future__ import annotations

import pytest
import tigerbeetle as tb

from ledger import TooMuchDataError
from tests.support.ledger import (
    AF,
    AS,
    TS,
    account,
    balances,
    new_accounts,
    transfer,
    unique_ledger,
)

pytestmark = pytest.mark.slow

LIMIT = 8189


async def test_8190_accounts_raise_and_write_nothing(ledger):
    L = unique_ledger()
    batch = [account(ledger=L) for _ in range(LIMIT + 1)]
    with pytest.raises(TooMuchDataError):
        await ledger.create_accounts(batch)
    probe = [batch[0].id, batch[LIMIT // 2].id, batch[-1].id]
    assert await ledger.lookup_accounts(probe) == []


async def test_8190_transfers_raise_and_write_nothing(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    batch = [transfer(ledger=L, dr=a, cr=b, amount=1) for _ in range(LIMIT + 1)]
    with pytest.raises(TooMuchDataError):
        await ledger.create_transfers(batch)
    assert await ledger.lookup_transfers([batch[0].id, batch[-1].id]) == []
    assert await balances(ledger, a) == (0, 0, 0, 0)


async def test_8189_accounts_are_accepted(ledger):
    L = unique_ledger()
    batch = [account(ledger=L) for _ in range(LIMIT)]
    results = await ledger.create_accounts(batch)
    assert len(results) == LIMIT
    assert {r.status for r in results} == {AS.CREATED}
    assert [a.id for a in await ledger.lookup_accounts([batch[0].id, batch[-1].id])] == [
        batch[0].id,
        batch[-1].id,
    ]


async def test_8189_transfers_are_accepted(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    batch = [transfer(ledger=L, dr=a, cr=b, amount=1, id=tb.id()) for _ in range(LIMIT)]
    results = await ledger.create_transfers(batch)
    assert len(results) == LIMIT
    assert {r.status for r in results} == {TS.CREATED}
    assert await balances(ledger, a) == (0, LIMIT, 0, 0)
