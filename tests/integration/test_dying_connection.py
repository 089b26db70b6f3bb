"""Proves that the errors asyncpg really raises when PostgreSQL terminates a backend under a transaction are
taken for the outage they are (pm/store/pool.py's database_unavailable, the postgres ledger's
LedgerUnavailableError, a stage's uncounted delivery), not for bugs. PostgreSQL sends its FATAL and then
closes the socket; what reaches the caller depends on when the client sees each:

- a statement in flight: ConnectionDoesNotExistError, then the transaction's exit fails on the closed
  connection (InterfaceError "the underlying connection is closed");
- the FATAL seen well before the close (a slow link; the relay here holds the close back) and a statement
  started in between: InternalClientError "cannot switch to state ..; another operation (2) is in progress",
  then the same InterfaceError on the transaction's exit;
- the same, but a COPY (the postgres ledger writes its transfers so): asyncpg does not close the
  connection on that InternalClientError, so the transaction's ROLLBACK fails with InterfaceError "another
  operation is in progress", and so does the pool's own ROLLBACK on release, which is what the caller
  gets. Alone that error is a bug (one connection used by two tasks); here it stands for the outage.
  Before it did, a stage counted the delivery: under `max_deliveries: 1` an intent was dead-lettered, left
  CLEARED or AUTHORIZED (seen in CI, tests/integration/test_database_outage.py).

The classification matches asyncpg's messages, so these run the real client against the real server: an
asyncpg release that words them otherwise fails here, not as intents dead-lettered in an outage."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest

from consumers.runtime import dependency_down
from ledger import LedgerUnavailableError
from ledger.postgres import _translated
from pm.store.pool import close_pool, database_unavailable, open_pool
from tests.support.tcp_proxy import TcpProxy

CLOSE_DELAY_S = 1.0  # the slow link holds the server's close back this long
FATAL_ARRIVES_S = 0.3  # time for the FATAL to reach the client, well inside CLOSE_DELAY_S
STATEMENT_S = 5  # the statement in flight when its backend is terminated
TERMINATE_AFTER_S = 0.2


@contextlib.asynccontextmanager
async def _pool_through_relay(database_url: str, close_delay_s: float) -> AsyncIterator[asyncpg.Pool]:
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    if host.startswith("/"):  # the embedded server's unix socket
        upstream = functools.partial(asyncio.open_unix_connection, f"{host}/.s.PGSQL.{port}")
    else:
        upstream = functools.partial(asyncio.open_connection, host, port)
    proxy = TcpProxy(upstream, close_delay_s=close_delay_s)
    netloc = f"{parts.username or 'postgres'}@127.0.0.1:{await proxy.start()}"
    pool = await open_pool(urlunsplit(("postgresql", netloc, parts.path, "", "")), connections_max=1)
    try:
        yield pool
    finally:
        await close_pool(pool)
        await proxy.close()
    assert proxy.connections >= 1, "the database was not reached through the relay"


async def _error_when_the_backend_dies(database_url: str, last: str) -> BaseException:
    """What the caller gets when its backend is terminated in a transaction, the `last` statement being
    "in flight" then, or started after the FATAL arrived ("after fatal", "copy after fatal")."""
    assert last in ("in flight", "after fatal", "copy after fatal"), last
    admin = await asyncpg.connect(database_url, timeout=10)
    await admin.execute("CREATE TABLE IF NOT EXISTS copied (n bigint)")
    try:
        async with _pool_through_relay(database_url, 0.0 if last == "in flight" else CLOSE_DELAY_S) as pool:
            with pytest.raises(Exception) as raised:
                async with pool.acquire() as conn, conn.transaction():
                    backend_pid = await conn.fetchval("SELECT pg_backend_pid()")
                    # asyncpg prepares a COPY's column query once per connection: with it cached, as in a
                    # busy ledger, the COPY after the FATAL goes straight to the protocol's copy-in.
                    await conn.copy_records_to_table("copied", records=[(0,)])
                    statement = None
                    if last == "in flight":
                        statement = asyncio.ensure_future(conn.execute(f"SELECT pg_sleep({STATEMENT_S})"))
                        await asyncio.sleep(TERMINATE_AFTER_S)
                    assert await admin.fetchval("SELECT pg_terminate_backend($1)", backend_pid)
                    if statement is not None:
                        await statement
                    await asyncio.sleep(FATAL_ARRIVES_S)
                    if last == "copy after fatal":
                        await conn.copy_records_to_table("copied", records=[(1,), (2,)])
                    await conn.fetchval("SELECT 1")
            return raised.value
    finally:
        await admin.close(timeout=10)


def _chain(exc: BaseException | None) -> list[type[BaseException]]:
    types = []
    while exc is not None and len(types) < 4:
        types.append(type(exc))
        exc = exc.__context__
    return types


async def _assert_an_outage(exc: BaseException) -> None:
    assert database_unavailable(exc), repr(exc)
    assert dependency_down(exc) == "database"

    async def ledger_method(self: object) -> None:
        raise exc

    with pytest.raises(LedgerUnavailableError):
        await _translated(ledger_method)(object())


async def test_a_backend_terminated_under_a_statement_is_an_outage(fresh_database) -> None:
    exc = await _error_when_the_backend_dies(await fresh_database(), "in flight")
    assert _chain(exc) == [asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError], repr(exc)
    await _assert_an_outage(exc)


async def test_a_statement_started_after_the_fatal_arrived_is_an_outage(fresh_database) -> None:
    exc = await _error_when_the_backend_dies(await fresh_database(), "after fatal")
    assert _chain(exc) == [asyncpg.InterfaceError, asyncpg.InternalClientError], repr(exc)
    assert "another operation (2) is in progress" in str(exc.__context__)
    await _assert_an_outage(exc)


async def test_a_copy_started_after_the_fatal_arrived_is_an_outage(fresh_database) -> None:
    exc = await _error_when_the_backend_dies(await fresh_database(), "copy after fatal")
    # The pool's ROLLBACK on release, during the transaction's, during the COPY's error.
    chain = [asyncpg.InterfaceError, asyncpg.InterfaceError, asyncpg.InternalClientError]
    assert _chain(exc) == chain, repr(exc)
    assert "another operation is in progress" in str(exc)
    await _assert_an_outage(exc)
