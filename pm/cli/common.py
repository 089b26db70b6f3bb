"""What every `pm` command shares: the exit codes, `CommandError`, and the servers and database it opens.

A command is `async def command(settings, arguments) -> int`: it returns its exit code, or raises
`CommandError`, which main.py prints as one line on stderr. Lower-library errors (asyncpg's, the embedded
servers') are translated to a `CommandError` here, where the resource is opened, never in the commands.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from pm.config.settings import Settings
from pm.dev.embedded import (
    CONNECT_TIMEOUT_S,
    EmbeddedServerError,
    embedded_database,
    embedded_redis,
    embedded_servers,
)
from pm.store.pool import target_session_attrs

EXIT_OK = 0
EXIT_PROBLEM_FOUND = 1
EXIT_CANNOT_RUN = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

Command = Callable[[Settings, argparse.Namespace], Awaitable[int]]

WALLET_CURRENCY_HELP = "ISO 4217 code; default: PM_WALLET_CURRENCY (THB)"


class CommandError(Exception):
    """A problem reported as one line on stderr, ending the command with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_CANNOT_RUN) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.asynccontextmanager
async def database_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the migrated database (configured or embedded), or a one-line CommandError."""
    async with database(settings) as database_url, connected(database_url) as connection:
        yield connection


@contextlib.asynccontextmanager
async def connected(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to `database_url` (migrated), or a one-line CommandError."""
    try:
        connection = await asyncpg.connect(
            database_url, timeout=CONNECT_TIMEOUT_S, target_session_attrs=target_session_attrs(database_url)
        )
    except (OSError, asyncpg.PostgresError, asyncpg.exceptions.TargetServerAttributeNotMatched) as exc:
        raise CommandError(f"database {redact_url(database_url)}: {first_line(exc)}") from exc
    try:
        yield connection
    except asyncpg.UndefinedTableError as exc:
        raise CommandError(f"the database has no {_table_named(exc)} table; run `pm db migrate` first") from exc
    finally:
        await connection.close(timeout=CONNECT_TIMEOUT_S)


def _table_named(exc: asyncpg.UndefinedTableError) -> str:
    match = re.search(r'relation "([^"]+)"', str(exc))
    return match.group(1) if match else "pm"


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[str]:
    try:
        async with embedded_database(settings) as database_url:
            yield database_url
    except EmbeddedServerError as exc:
        raise CommandError(f"embedded PostgreSQL: {first_line(exc)}") from exc


@contextlib.asynccontextmanager
async def servers_running(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    try:
        async with embedded_servers(settings) as urls:
            yield urls
    except EmbeddedServerError as exc:
        raise CommandError(f"embedded servers: {first_line(exc)}") from exc


@contextlib.asynccontextmanager
async def redis_running(settings: Settings) -> AsyncIterator[str]:
    """PM_REDIS_URL, or an embedded Valkey's URL for the block (no PostgreSQL started)."""
    try:
        async with embedded_redis(settings) as redis_url:
            yield redis_url
    except EmbeddedServerError as exc:
        raise CommandError(f"embedded Valkey: {first_line(exc)}") from exc


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***, safe to print and log."""
    return re.sub(r"(://[^:/@?#]*):[^@/?#]*@", r"\1:***@", url)


def first_line(exc: BaseException) -> str:
    # Server errors (asyncpg's especially) can span lines; the contract is one line on stderr.
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
