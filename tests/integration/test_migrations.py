"""Proves that `pm db migrate` applies sql/ once, even when runners race, and refuses edited applied files."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from pm.migrate import (
    MIGRATIONS_DIR,
    MigrationChecksumError,
    MigrationFailedError,
    MigrationUnknownError,
    migrate,
)

CreateDatabase = Callable[[], Awaitable[str]]

# DESIGN.md §3: every operation type has a default route to its channel.
DEFAULT_ROUTES = {
    "P2P_TRANSFER": "INTERNAL_P2P",
    "IPPS_WITHDRAWAL": "IPPS_TRANSFER",
    "THAI_QR_PAY": "IPPS_TRANSFER",
    "QP_TOPUP": "QP_TRANSFER",
    "MINIAPP_CHARGE": "MINIAPP",
    "MINIAPP_CREDIT": "MINIAPP",
    "ADMIN_ADJUSTMENT": "ADJUSTMENT",
}
ALL_NAMES = sorted(path.name for path in MIGRATIONS_DIR.glob("*.sql"))


@pytest.fixture
async def empty_database(fresh_database: CreateDatabase) -> str:
    return await fresh_database()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Connection]]]:
    connections: list[asyncpg.Connection] = []

    async def open_connection(database_url: str) -> asyncpg.Connection:
        connection = await asyncpg.connect(database_url, timeout=10)
        connections.append(connection)
        return connection

    yield open_connection
    for connection in connections:
        await connection.close(timeout=10)


async def _recorded(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT version, name, checksum, applied_at FROM pm.schema_migrations ORDER BY 1"
    )


async def test_migrates_an_empty_database_and_seeds_default_routes(empty_database: str, connect) -> None:
    assert await migrate(empty_database) == ALL_NAMES
    connection = await connect(empty_database)
    routes = await connection.fetch(
        "SELECT operation_type, channel, min_amount_minor, enabled FROM pm.payment_route ORDER BY id"
    )
    assert {row["operation_type"]: row["channel"] for row in routes} == DEFAULT_ROUTES
    assert len(routes) == len(DEFAULT_ROUTES)
    assert all(row["enabled"] and row["min_amount_minor"] == 1 for row in routes)
    first = (await _recorded(connection))[0]
    assert first["name"] == "0001_pm_schema.sql"
    assert first["checksum"] == hashlib.sha256((MIGRATIONS_DIR / first["name"]).read_bytes()).hexdigest()


async def test_second_run_applies_nothing_and_changes_nothing(empty_database: str, connect) -> None:
    await migrate(empty_database)
    connection = await connect(empty_database)
    recorded_before = await _recorded(connection)
    routes_before = await connection.fetch("SELECT * FROM pm.payment_route ORDER BY id")
    assert await migrate(empty_database) == []
    assert await _recorded(connection) == recorded_before
    assert await connection.fetch("SELECT * FROM pm.payment_route ORDER BY id") == routes_before


async def test_concurrent_runners_apply_each_file_exactly_once(empty_database: str, connect) -> None:
    runner_count = 4
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(runner_count)))
    applied_names = sorted(name for result in results for name in result)
    assert applied_names == ALL_NAMES
    assert sum(1 for result in results if result) == 1
    connection = await connect(empty_database)
    assert len(await _recorded(connection)) == len(ALL_NAMES)
    assert await connection.fetchval("SELECT count(*) FROM pm.payment_route") == len(DEFAULT_ROUTES)


async def test_an_applied_file_that_was_edited_is_refused(
    empty_database: str, tmp_path: Path, connect
) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, directory)
    await migrate(empty_database, directory)
    connection = await connect(empty_database)
    recorded_before = await _recorded(connection)
    edited = directory / "0001_pm_schema.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    _write(directory, "9001_after_the_edit.sql", "CREATE TABLE pm.after_the_edit (id int);")
    with pytest.raises(MigrationChecksumError, match=r"0001_pm_schema\.sql"):
        await migrate(empty_database, directory)
    # Refused before anything ran: the later file was not applied either.
    assert await _recorded(connection) == recorded_before
    assert await connection.fetchval("SELECT to_regclass('pm.after_the_edit')") is None


async def test_a_failing_file_leaves_nothing_behind(empty_database: str, tmp_path: Path, connect) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, directory)
    _write(directory, "9001_broken.sql", "CREATE TABLE pm.half_done (id int);\nSELECT 1 / 0;")
    with pytest.raises(MigrationFailedError, match=r"9001_broken\.sql"):
        await migrate(empty_database, directory)
    connection = await connect(empty_database)
    assert [row["name"] for row in await _recorded(connection)] == ALL_NAMES
    assert await connection.fetchval("SELECT to_regclass('pm.half_done')") is None
    # Fixed forward (the file was never recorded, so editing it is allowed), it applies.
    _write(directory, "9001_broken.sql", "CREATE TABLE pm.half_done (id int);")
    assert await migrate(empty_database, directory) == ["9001_broken.sql"]


async def test_a_database_ahead_of_this_checkout_is_refused(empty_database: str, tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, directory)
    _write(directory, "9001_newer.sql", "SELECT 1;")
    await migrate(empty_database, directory)
    with pytest.raises(MigrationUnknownError, match=r"9001_newer\.sql"):
        await migrate(empty_database)


async def test_route_table_refuses_inverted_ranges_and_priority_ties(postgres_url: str, connect) -> None:
    connection = await connect(postgres_url)
    insert = (
        "INSERT INTO pm.payment_route (operation_type, min_amount_minor, max_amount_minor, channel, priority)"
        " VALUES ($1, $2, $3, $4, $5)"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await connection.execute(insert, "P2P_TRANSFER", 500, 100, "INTERNAL_P2P", 1)
    with pytest.raises(asyncpg.CheckViolationError):
        await connection.execute(insert, "p2p transfer", 1, 100, "INTERNAL_P2P", 1)
    with pytest.raises(asyncpg.UniqueViolationError):
        await connection.execute(insert, "P2P_TRANSFER", 1, 100, "INTERNAL_P2P", 100)


def _write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql, encoding="utf-8")
