"""Session fixtures for real servers, on the same code as `pm up` (pm.dev.embedded, pm.store.migrate).

    postgres_url: str                           a migrated database, shared by the whole session
    fresh_database: () -> Awaitable[str]        `await fresh_database()`: a new empty database's URL
    redis_url: str                              Valkey (or Redis) for the session
    postgres_server_url: str                    the server's maintenance database (`postgres`)

By default the servers are embedded, with their data in this session's temp directory, so every session
starts empty. PM_TEST_DATABASE_URL / PM_TEST_REDIS_URL point the suite at other servers instead: on a
PostgreSQL server the suite creates (and at the end drops) databases of its own; a Redis server is
shared as it is, so tests use unique keys. A server starts the first time a test asks for it (session
fixtures are lazy) and stops when the session ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType

import asyncpg
import pytest

from pm.config.settings import Settings
from pm.dev.embedded import CONNECT_TIMEOUT_S, create_database, running_postgres, running_valkey
from pm.store.migrate import migrate
from tests.support.nginx import nginx_binary

CreateDatabase = Callable[[], Awaitable[str]]


def pytest_report_header(config: pytest.Config) -> list[str]:
    if Settings().tigerbeetle_addresses:
        ledger = "ledger conformance: memory, postgres and tigerbeetle (PM_TIGERBEETLE_ADDRESSES is set)"
    else:
        ledger = "ledger conformance: memory, postgres; tigerbeetle SKIPPED (PM_TIGERBEETLE_ADDRESSES is not set)"
    found = nginx_binary()
    edge = f"nginx edge: {found}" if found else "nginx edge: SKIPPED (nginx is not installed; .ci/run installs it)"
    promtool = shutil.which("promtool")
    rules = f"alert rules: {promtool}" if promtool else "alert rules: promtool SKIPPED (.ci/run installs it)"
    return [ledger, edge, rules]


def pytest_configure(config: pytest.Config) -> None:
    # A CI runner's timeout ends the run with SIGTERM, which would kill Python without any teardown;
    # as KeyboardInterrupt, pytest still tears the session fixtures down and so stops the servers.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


# pytest-xdist (`-n auto --dist loadgroup`, pyproject.toml): the suite runs on one worker per core, at most
# TEST_WORKERS_MAX, each with embedded servers of its own (session fixtures are per worker). Every file's
# tests stay on one worker (their module fixtures are set up once), and the fleet tests (tests/e2e, each
# a dozen processes with deadlines) all share one worker, so at most one fleet runs at a time.
TEST_WORKERS_MAX = 4
FLEET_TESTS_DIR = "tests/e2e/"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(TEST_WORKERS_MAX, os.cpu_count() or 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = "fleet" if path.startswith(FLEET_TESTS_DIR) else path
        item.add_marker(pytest.mark.xdist_group(group))


def _raise_keyboard_interrupt(signal_number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal_number}")


@pytest.fixture(scope="session")
def session_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def postgres_server_url(
    session_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """URL of the PostgreSQL server's maintenance database; tests create their own databases on it."""
    if session_settings.test_database_url is not None:
        yield session_settings.test_database_url
        return
    with running_postgres(tmp_path_factory.mktemp("postgres")) as server_url:
        yield server_url


@pytest.fixture(scope="session")
async def fresh_database(
    session_settings: Settings, postgres_server_url: str
) -> AsyncIterator[CreateDatabase]:
    """A factory: `url = await fresh_database()` creates a new, empty database and returns its URL."""
    created_names: list[str] = []

    async def create() -> str:
        name = f"pm_test_{uuid.uuid4().hex[:16]}"
        created_names.append(name)
        return await create_database(postgres_server_url, name, exist_ok=False)

    yield create
    # An embedded server's data disappears with the temp dir; a configured server keeps what we leave.
    if session_settings.test_database_url is not None:
        await _drop_databases(postgres_server_url, created_names)


@pytest.fixture(scope="session")
async def postgres_url(fresh_database: CreateDatabase) -> str:
    """A database of its own for this session, migrated exactly as `pm db migrate` does."""
    database_url = await fresh_database()
    await migrate(database_url)
    return database_url


@pytest.fixture(scope="session")
def redis_url(session_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if session_settings.test_redis_url is not None:
        yield session_settings.test_redis_url
        return
    with running_valkey(tmp_path_factory.mktemp("valkey")) as url:
        yield url


async def _drop_databases(server_url: str, names: list[str]) -> None:
    connection = await asyncpg.connect(server_url, timeout=CONNECT_TIMEOUT_S)
    try:
        for name in names:
            # FORCE: a test that leaked a connection must not make the whole session fail at the end.
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await connection.close(timeout=CONNECT_TIMEOUT_S)
