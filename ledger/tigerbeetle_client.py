"""`tigerbeetle://`: the official client, with our bounds checks and error translation.

The client never times out and must not be cancelled (DESIGN.md §10), so requests are shielded:
a caller that gives up does not tear a request out of the client mid-flight.

A cluster holds a bounded number of client sessions (`clients_max`, 64 by default) and evicts the
oldest when a new one registers past it; an evicted client refuses every later request for good. So an
eviction replaces the client (a new session, registered on its first request) and the request fails as
`LedgerUnavailableError`, which every caller retries: ids are derived, so a retry of a request that did
land answers `exists`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import tigerbeetle as tb

from ledger import validate
from ledger.errors import LedgerUnavailableError, TooMuchDataError

CONNECT_TIMEOUT_S = 10.0

logger = logging.getLogger("pm.ledger")


def _new_client(addresses: str, cluster_id: int) -> tb.ClientAsync:
    try:
        return tb.ClientAsync(cluster_id=cluster_id, replica_addresses=addresses)
    except Exception as exc:  # the client raises InitError and friends for bad addresses
        raise LedgerUnavailableError(f"TigerBeetle client for {addresses!r} failed to start: {exc!r}") from exc


class TigerBeetleLedger:
    def __init__(self, client: Any, new_client: Callable[[], Any] | None = None) -> None:
        self._client = client
        self._new_client = new_client  # how to open a fresh session after an eviction; None: never
        self.evictions = 0  # sessions the cluster evicted (each replaced by a new client)

    @classmethod
    async def connect(cls, addresses: str, cluster_id: int) -> TigerBeetleLedger:
        client = _new_client(addresses, cluster_id)
        ledger = cls(client, functools.partial(_new_client, addresses, cluster_id))
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

    async def _call(self, method_name: str, payload: Any) -> Any:
        client = self._client
        try:
            return await asyncio.shield(getattr(client, method_name)(payload))
        except tb.TooMuchDataError as exc:
            raise TooMuchDataError("the TigerBeetle cluster refused the request as too large") from exc
        except tb.ClientEvictedError as exc:
            await self._replace_evicted(client)
            raise LedgerUnavailableError(f"TigerBeetle evicted this client's session ({exc!r}); retry") from exc
        except tb.ClientClosedError as exc:
            raise LedgerUnavailableError(f"TigerBeetle client unusable: {exc!r}") from exc

    async def _replace_evicted(self, evicted: Any) -> None:
        """A new client in place of `evicted`, once: requests in flight on it see the same eviction."""
        if self._new_client is None or self._client is not evicted:
            return
        self._client = self._new_client()
        self.evictions += 1
        logger.warning("tigerbeetle session evicted; opened a new client", extra={"evictions": self.evictions})
        with contextlib.suppress(Exception):  # it is unusable anyway; closing frees its resources
            await evicted.close()

    async def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        validate.check_accounts(accounts)
        return await self._call("create_accounts", accounts)

    async def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]:
        validate.check_transfers(transfers)
        return await self._call("create_transfers", transfers)

    async def lookup_accounts(self, ids: list[int]) -> list[tb.Account]:
        validate.check_ids(ids)
        return await self._call("lookup_accounts", ids)

    async def lookup_transfers(self, ids: list[int]) -> list[tb.Transfer]:
        validate.check_ids(ids)
        return await self._call("lookup_transfers", ids)

    async def get_account_transfers(self, f: tb.AccountFilter) -> list[tb.Transfer]:
        return await self._call("get_account_transfers", f)

    async def get_account_balances(self, f: tb.AccountFilter) -> list[tb.AccountBalance]:
        return await self._call("get_account_balances", f)

    async def query_accounts(self, f: tb.QueryFilter) -> list[tb.Account]:
        return await self._call("query_accounts", f)

    async def query_transfers(self, f: tb.QueryFilter) -> list[tb.Transfer]:
        return await self._call("query_transfers", f)

    async def close(self) -> None:
        await self._client.close()
