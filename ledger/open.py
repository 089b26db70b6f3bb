"""`open_ledger(url)`: pick a backend from the URL and own its lifetime."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import tigerbeetle as tb

from ledger.errors import LedgerUrlError
from ledger.validate import BATCH_EVENTS_MAX

__all__ = ["BATCH_EVENTS_MAX", "Ledger", "LedgerUrl", "open_ledger", "parse_ledger_url"]

# How long a TigerBeetle request may go unanswered before the caller is told the ledger is unavailable
# (`tigerbeetle://…?request_timeout_ms=`): the client itself waits forever for an unreachable cluster.
# A healthy cluster answers in milliseconds; the default leaves room for a view change.
REQUEST_TIMEOUT_MS_DEFAULT = 5_000
REQUEST_TIMEOUT_MS_MIN = 10
REQUEST_TIMEOUT_MS_MAX = 600_000


class Ledger(Protocol):
    """TigerBeetle 0.17's async client API; every backend implements exactly this."""

    async def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]: ...
    async def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]: ...
    async def lookup_accounts(self, ids: list[int]) -> list[tb.Account]: ...
    async def lookup_transfers(self, ids: list[int]) -> list[tb.Transfer]: ...
    async def get_account_transfers(self, f: tb.AccountFilter) -> list[tb.Transfer]: ...
    async def get_account_balances(self, f: tb.AccountFilter) -> list[tb.AccountBalance]: ...
    async def query_accounts(self, f: tb.QueryFilter) -> list[tb.Account]: ...
    async def query_transfers(self, f: tb.QueryFilter) -> list[tb.Transfer]: ...


class LedgerUrl:
    """A parsed ledger URL: `memory://`, `postgresql://…`, `tigerbeetle://3000,3001?cluster=0&request_timeout_ms=5000`."""

    def __init__(
        self,
        scheme: str,
        url: str,
        addresses: str = "",
        cluster_id: int = 0,
        request_timeout_ms: int = REQUEST_TIMEOUT_MS_DEFAULT,
    ) -> None:
        self.scheme = scheme
        self.url = url
        self.addresses = addresses
        self.cluster_id = cluster_id
        self.request_timeout_ms = request_timeout_ms


def parse_ledger_url(url: str) -> LedgerUrl:
    if not isinstance(url, str) or "://" not in url:
        raise LedgerUrlError(
            f"ledger URL {url!r} is not a URL; use memory://, postgresql://user@host/db "
            "or tigerbeetle://3000,3001?cluster=0"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        if url.rstrip("/") != "memory:":
            raise LedgerUrlError(f"ledger URL {url!r}: memory:// takes no host, path or query")
        return LedgerUrl("memory", url)
    if scheme in ("postgres", "postgresql"):
        return LedgerUrl("postgresql", url)
    if scheme == "tigerbeetle":
        return _parse_tigerbeetle_url(url)
    raise LedgerUrlError(f"ledger URL {url!r} has unknown scheme {scheme!r}; use memory, postgresql or tigerbeetle")


def _parse_tigerbeetle_url(url: str) -> LedgerUrl:
    parts = urlsplit(url)
    addresses = url.split("://", 1)[1].split("?", 1)[0].split("/", 1)[0]
    if not addresses:
        raise LedgerUrlError(f"ledger URL {url!r} names no TigerBeetle address (e.g. tigerbeetle://3000)")
    for address in addresses.split(","):
        port = address.rsplit(":", 1)[-1]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise LedgerUrlError(f"ledger URL {url!r}: {address!r} is not a port or host:port")
    query = parse_qs(parts.query, strict_parsing=False)
    unknown = set(query) - {"cluster", "request_timeout_ms"}
    if unknown:
        raise LedgerUrlError(
            f"ledger URL {url!r}: unknown parameter(s) {sorted(unknown)}; only 'cluster' and 'request_timeout_ms'"
        )
    cluster_text = query.get("cluster", ["0"])[-1]
    if not cluster_text.isdigit() or int(cluster_text) >= 1 << 128:
        raise LedgerUrlError(f"ledger URL {url!r}: cluster must be an unsigned 128-bit integer")
    timeout_text = query.get("request_timeout_ms", [str(REQUEST_TIMEOUT_MS_DEFAULT)])[-1]
    if not timeout_text.isdigit() or not REQUEST_TIMEOUT_MS_MIN <= int(timeout_text) <= REQUEST_TIMEOUT_MS_MAX:
        raise LedgerUrlError(
            f"ledger URL {url!r}: request_timeout_ms must be {REQUEST_TIMEOUT_MS_MIN} to {REQUEST_TIMEOUT_MS_MAX}"
        )
    return LedgerUrl(
        "tigerbeetle", url, addresses=addresses, cluster_id=int(cluster_text), request_timeout_ms=int(timeout_text)
    )


@contextlib.asynccontextmanager
async def open_ledger(url: str) -> AsyncIterator[Ledger]:
    """Yield a ledger for `url`; closes its connections on exit."""
    parsed = parse_ledger_url(url)
    if parsed.scheme == "memory":
        from ledger.memory import MemoryLedger

        yield MemoryLedger()
        return
    if parsed.scheme == "postgresql":
        from ledger.postgres import PostgresLedger

        ledger = await PostgresLedger.connect(parsed.url)
    else:
        from ledger.tigerbeetle_client import TigerBeetleLedger

        ledger = await TigerBeetleLedger.connect(parsed.addresses, parsed.cluster_id, parsed.request_timeout_ms)
    try:
        yield ledger
    finally:
        await ledger.close()
