"""`tigerbeetle://`: the official client, with our bounds checks and error translation.

The client never times out and must not be cancelled (DESIGN.md §10), so requests are shielded:
a caller that gives up does not tear a request out of the client mid-flight. And because it never
times out, a cluster that cannot be reached would hold every caller forever (a stage's batch, a
balance read, shutdown's drain). So each request is awaited for at most `request_timeout_ms`; past it
the caller gets `LedgerUnavailableError` (a dependency outage: stages keep the batch pending and retry,
the gateway answers 503), while the request itself stays with the client, which sends it when a replica
answers. That late landing is harmless: ids are derived, so the caller's retry of the same events
answers `exists`. At most `UNANSWERED_REQUESTS_MAX` such requests are left with the client; beyond
that, calls fail at once without sending anything, until one is answered (the cluster is back).

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
from ledger.open import REQUEST_TIMEOUT_MS_DEFAULT

CONNECT_TIMEOUT_S = 10.0
# Requests past their timeout, left with the client to land when the cluster is back (module docstring).
UNANSWERED_REQUESTS_MAX = 64

logger = logging.getLogger("pm.ledger")


def _new_client(addresses: str, cluster_id: int) -> tb.ClientAsync:
    try:
        return tb.ClientAsync(cluster_id=cluster_id, replica_addresses=addresses)
    except Exception as exc:  # the client raises InitError and friends for bad addresses
        raise LedgerUnavailableError(f"TigerBeetle client for {addresses!r} failed to start: {exc!r}") from exc


class TigerBeetleLedger:
    def __init__(
        self,
        client: Any,
        new_client: Callable[[], Any] | None = None,
        request_timeout_ms: int = REQUEST_TIMEOUT_MS_DEFAULT,
        unanswered_max: int = UNANSWERED_REQUESTS_MAX,
    ) -> None:
        assert request_timeout_ms > 0 and unanswered_max >= 1, (request_timeout_ms, unanswered_max)
        self._client = client
        self._new_client = new_client  # how to open a fresh session after an eviction; None: never
        self._request_timeout_s = request_timeout_ms / 1000
        self._unanswered_max = unanswered_max
        self.unanswered = 0  # requests past their timeout the client still holds
        self.evictions = 0  # sessions the cluster evicted (each replaced by a new client)

    @classmethod
    async def connect(
        cls, addresses: str, cluster_id: int, request_timeout_ms: int = REQUEST_TIMEOUT_MS_DEFAULT
    ) -> TigerBeetleLedger:
        client = _new_client(addresses, cluster_id)
        ledger = cls(client, functools.partial(_new_client, addresses, cluster_id), request_timeout_ms)
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
        if self.unanswered >= self._unanswered_max:
            raise LedgerUnavailableError(
                f"{self.unanswered} TigerBeetle requests are unanswered past {self._request_timeout_s:g} s; "
                "nothing more is sent until one is answered"
            )
        request = asyncio.ensure_future(getattr(client, method_name)(payload))
        try:
            return await asyncio.wait_for(asyncio.shield(request), self._request_timeout_s)
        except TimeoutError as exc:
            self.unanswered += 1
            request.add_done_callback(self._answered_late)
            raise LedgerUnavailableError(
                f"TigerBeetle did not answer {method_name} within {self._request_timeout_s:g} s"
            ) from exc
        except tb.TooMuchDataError as exc:
            raise TooMuchDataError("the TigerBeetle cluster refused the request as too large") from exc
        except tb.ClientEvictedError as exc:
            await self._replace_evicted(client)
            raise LedgerUnavailableError(f"TigerBeetle evicted this client's session ({exc!r}); retry") from exc
        except tb.ClientClosedError as exc:
            raise LedgerUnavailableError(f"TigerBeetle client unusable: {exc!r}") from exc

    def _answered_late(self, request: asyncio.Future[Any]) -> None:
        """A request past its timeout came back (the cluster answered, or the client was closed)."""
        self.unanswered -= 1
        assert self.unanswered >= 0, self.unanswered
        if not request.cancelled():
            request.exception()  # retrieved: its caller is gone, and an error here is expected

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
