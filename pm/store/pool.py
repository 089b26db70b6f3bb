"""The one way a PM process opens PostgreSQL: a pool with bounded timeouts (STYLE.md: every await on the
network has a bound), used by the gateway, every stage, the poller and the outbox worker.

    pool = await open_pool(database_url, connections_max=4)
    await close_pool(pool)                     # bounded too: a stuck holder cannot hang shutdown
    database_unavailable(exc)                  # the server is down or dropped us: retry later, not a bug

A connection the server dropped (`pg_terminate_backend`, a restart) fails only the statement that was on
it; asyncpg's pool notices a dropped idle connection and opens a new one on the next acquire, so a pool
recovers by itself once the server answers again.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg

from pm.config.constants import (
    DATABASE_COMMAND_TIMEOUT_S,
    DATABASE_CONNECT_TIMEOUT_S,
    DATABASE_POOL_CLOSE_TIMEOUT_S,
)

# What asyncpg raises when the server cannot be reached or went away: connection errors (08xxx, e.g.
# ConnectionDoesNotExistError "connection was closed in the middle of operation"), the server shutting
# down or terminating our backend (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now),
# too many connections (53300), a refused or timed-out connect (OSError, TimeoutError).
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # A server that takes no writes (25006): a hot standby after a failover, or one put in read-only
    # mode (default_transaction_read_only) for maintenance. New connections refuse such a server
    # (target_session_attrs read-write): TargetServerAttributeNotMatched when no host is writable.
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
)


# How far back database_unavailable follows asyncpg's cleanup errors (a transaction's ROLLBACK, then the
# pool's on release: two links are seen; more would be a loop of cleanups).
CLEANUP_CHAIN_LINKS_MAX = 8


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL is down or dropped the connection (an operating condition: retry
    later) rather than that a statement was wrong (a bug, or bad input).

    asyncpg's own state errors (InterfaceError, InternalClientError) raised while it cleaned up after an
    earlier error stand for that error. A COPY started after the server's FATAL fails without asyncpg
    closing the connection; the transaction's ROLLBACK then fails ("another operation is in progress"),
    and so does the pool's on release, which is all the caller sees (tests/integration/
    test_dying_connection.py). Alone, that last error is a bug: one connection used by two tasks."""
    link: BaseException | None = exc
    for _ in range(CLEANUP_CHAIN_LINKS_MAX):
        if link is None:
            return False
        if isinstance(link, _UNAVAILABLE_ERRORS) or _dying_connection(link):
            return True
        if type(link) not in (asyncpg.InterfaceError, asyncpg.InternalClientError):
            return False
        link = link.__cause__ or link.__context__
    return False


def _dying_connection(exc: BaseException) -> bool:
    """asyncpg's own errors for a connection that died under a statement. A terminated backend sends its
    FATAL message, then closes the socket; a statement started between the two meets the protocol still
    consuming the error (InternalClientError "cannot switch to state 12; another operation (2) is in
    progress"), a connection closed meanwhile is refused ("connection is closed"), and a proxy whose
    connection the pool took back on the close is too ("connection has been released back to the pool";
    measured under pg_terminate_backend, tests/integration/test_database_outage.py). Other InterfaceErrors
    (DataError: a bad argument) are programmer errors."""
    message = str(exc)
    if type(exc) is asyncpg.InterfaceError:
        return "connection is closed" in message or "released back to the pool" in message
    if type(exc) is asyncpg.InternalClientError:
        return "another operation" in message
    return False


async def _keep_session(connection: asyncpg.Connection) -> None:
    """asyncpg pool `reset` hook that sends nothing.

    asyncpg's default reset runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on
    every release: one more round trip and one more PostgreSQL transaction per pooled statement (it was
    half the commits of a P2P intent). No pooled connection of PM keeps session state (no SET, LISTEN,
    cursors outside a transaction or session advisory locks), and asyncpg still rolls back a transaction
    left open before it calls this hook.
    """


def target_session_attrs(database_url: str) -> str | None:
    """The server a new connection accepts: read-write (one that takes writes: with several hosts in the
    URL, the primary, wherever a failover put it), unless the URL or PGTARGETSESSIONATTRS says; then None."""
    if "target_session_attrs=" in database_url or os.environ.get("PGTARGETSESSIONATTRS"):
        return None
    return "read-write"


async def open_pool(database_url: str, *, connections_max: int) -> asyncpg.Pool:
    """A pool of at most `connections_max` connections; every statement is cancelled after
    DATABASE_COMMAND_TIMEOUT_S and every connection attempt gives up after DATABASE_CONNECT_TIMEOUT_S."""
    assert connections_max >= 1, connections_max
    return await asyncpg.create_pool(
        database_url,
        target_session_attrs=target_session_attrs(database_url),
        min_size=1,
        max_size=connections_max,
        timeout=DATABASE_CONNECT_TIMEOUT_S,
        command_timeout=DATABASE_COMMAND_TIMEOUT_S,
        reset=_keep_session,
    )


async def close_pool(pool: asyncpg.Pool, timeout_s: float = DATABASE_POOL_CLOSE_TIMEOUT_S) -> None:
    """Close gracefully, but bounded: asyncpg's close waits without limit for every connection to be
    released, so one stuck holder would hang shutdown; after `timeout_s` the rest are terminated."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        pool.terminate()
