"""`tigerbeetle://`: the official client, with our bounds checks and error translation.

The client never times out and must not be cancelled (DESIGN.md §10), so requests are shielded:
a caller that gives up does not tear a request out of the client mid-flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import tigerbeetle as tb

from ledger import validate
from ledger.errors import LedgerUnavailableError, TooMuchDataError

CONNECT_TIMEOUT_S = 10.0


class TigerBeetleLedger:
    def __init__(self, client: tb.ClientAsync) -> None:
        self._client = client

    @classmethod
    async def connect(cls, addresses: str, cluster_id: int) -> TigerBeetleLedger:
        try:
            client = tb.ClientAsync(cluster_id=cluster_id, replica_addresses=addresses)
        except Exception as exc:  # the client raises InitError and friends for bad addresses
            raise LedgerUnavailableError(
                f"TigerBeetle client for {addresses!r} failed to start: {exc!r}"
            ) from exc
        ledger = cls(client)
        # The client connects lazily; one lookup proves a replica answers.
        probe = asyncio.ensure_future(client.lookup_accounts([1]))
        try:
            await asyncio.wait_for(asyncio.shield(probe), CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            # Closing the client completes the probe still in flight (it is never cancelled).
            await client.close()
            with contextlib.suppress(Exception):
                await probe
            raise LedgerUnavailableError(
                f"no TigerBeetle replica of cluster {cluster_id} at {addresses!r} answered "
                f"within {CONNECT_TIMEOUT_S:.0f} s"
            ) from exc
        return ledger

    async def _call(self, method: Any, payload: Any) -> Any:
        try:
            return await asyncio.shield(method(payload))
        except tb.TooMuchDataError as exc:
            raise TooMuchDataError("the TigerBeetle cluster refused the request as too large") from exc
        except (tb.ClientClosedError, tb.ClientEvictedError) as exc:
            raise LedgerUnavailableError(f"TigerBeetle client unusable: {exc!r}") from exc

    async def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        validate.check_accounts(accounts)
        return await self._call(self._client.create_accounts, accounts)

    async def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]:
        validate.check_transfers(transfers)
        return await self._call(self._client.create_transfers, transfers)

    async def lookup_accounts(self, ids: list[int]) -> list[tb.Account]:
        validate.check_ids(ids)
        return await self._call(self._client.lookup_accounts, ids)

    async def lookup_transfers(self, ids: list[int]) -> list[tb.Transfer]:
        validate.check_ids(ids)
        return await self._call(self._client.lookup_transfers, ids)

    async def get_account_transfers(self, f: tb.AccountFilter) -> list[tb.Transfer]:
        return await self._call(self._client.get_account_transfers, f)

    async def get_account_balances(self, f: tb.AccountFilter) -> list[tb.AccountBalance]:
        return await self._call(self._client.get_account_balances, f)

    async def query_accounts(self, f: tb.QueryFilter) -> list[tb.Account]:
        return await self._call(self._client.query_accounts, f)

    async def query_transfers(self, f: tb.QueryFilter) -> list[tb.Transfer]:
        return await self._call(self._client.query_transfers, f)

    async def close(self) -> None:
        await self._client.close()
