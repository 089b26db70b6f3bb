"""A TigerBeetle cluster evicts the oldest client session past `clients_max`; the evicted client refuses
every later request for good. The ledger then opens a new client, and the failed request is an outage
the caller retries (never a FAILED intent)."""

from __future__ import annotations

import asyncio

import pytest
import tigerbeetle as tb

from ledger.errors import LedgerUnavailableError
from ledger.tigerbeetle_client import TigerBeetleLedger


class FakeClient:
    """What the official client does once evicted: every request raises ClientEvictedError."""

    def __init__(self, name: str, evicted: bool = False, gate: asyncio.Event | None = None) -> None:
        self.name = name
        self.evicted = evicted
        self.gate = gate
        self.closed = False
        self.looked_up: list[list[int]] = []

    async def lookup_accounts(self, ids: list[int]) -> list[tb.Account]:
        if self.gate is not None:
            await self.gate.wait()
        if self.evicted:
            raise tb.ClientEvictedError()
        self.looked_up.append(ids)
        return []

    async def close(self) -> None:
        self.closed = True


async def test_an_evicted_session_is_replaced_and_the_retry_goes_through_the_new_client() -> None:
    old = FakeClient("old", evicted=True)
    new = FakeClient("new")
    opened: list[FakeClient] = []

    def new_client() -> FakeClient:
        opened.append(new)
        return new

    ledger = TigerBeetleLedger(old, new_client)
    with pytest.raises(LedgerUnavailableError, match="evicted"):
        await ledger.lookup_accounts([7])
    assert opened == [new] and old.closed and ledger.evictions == 1
    assert await ledger.lookup_accounts([7]) == []  # the caller's retry
    assert new.looked_up == [[7]]


async def test_requests_in_flight_on_the_evicted_client_open_one_new_client_not_one_each() -> None:
    gate = asyncio.Event()
    old = FakeClient("old", evicted=True, gate=gate)
    opened: list[FakeClient] = []

    def new_client() -> FakeClient:
        opened.append(FakeClient(f"new-{len(opened)}"))
        return opened[-1]

    ledger = TigerBeetleLedger(old, new_client)
    calls = [asyncio.create_task(ledger.lookup_accounts([n])) for n in range(1, 6)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, LedgerUnavailableError) for result in results)
    assert len(opened) == 1 and ledger.evictions == 1


async def test_a_closed_client_is_an_outage_and_is_not_replaced() -> None:
    class Closed(FakeClient):
        async def lookup_accounts(self, ids: list[int]) -> list[tb.Account]:
            raise tb.ClientClosedError()

    ledger = TigerBeetleLedger(Closed("closed"), lambda: pytest.fail("a closed client is not replaced"))
    with pytest.raises(LedgerUnavailableError):
        await ledger.lookup_accounts([1])
    assert ledger.evictions == 0
