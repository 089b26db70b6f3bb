"""Apply the plain-SQL migrations in `sql/` in version order, once each, recorded in `pm.schema_migrations`.

    applied_names = await migrate(database_url)    # the files this call applied; [] when up to date

Files are named `NNNN_what_it_does.sql`. Each runs in its own transaction together with its record, so
a failing file leaves nothing behind (and so a file must not contain BEGIN/COMMIT or statements that
refuse transactions, such as CREATE INDEX CONCURRENTLY).

Safe when many processes run it at once: a PostgreSQL advisory lock serializes the runners, and each
runner reads what is applied only after taking the lock. An applied file that was later edited is
refused: fix forward with a new file.

Exceptions (all subclass `MigrationError`):
    DatabaseUnavailableError  the database could not be reached
    MigrationLockTimeoutError another runner held the lock longer than `LOCK_WAIT_TIMEOUT_S`
    MigrationFileError        a .sql file is misnamed, or two files share a version
    MigrationChecksumError    an applied file's contents changed since it was applied
    MigrationUnknownError     the database records a version that has no file here (older checkout?)
    MigrationFailedError      a file's SQL failed; nothing of it was kept
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from pm.store.pool import target_session_attrs

logger = logging.getLogger(__name__)

# sql/ sits beside the `pm` package in the repository (the package is installed editable).
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "sql"
MIGRATION_FILE_PATTERN = re.compile(r"(?P<version>\d{4})_(?P<slug>[a-z0-9_]+)\.sql")
# Any constant works as long as every runner uses the same one: these are the ASCII bytes "pm_migra".
MIGRATION_LOCK_KEY = 0x706D5F6D69677261
# Long enough to wait out another runner applying every file; a stuck runner is an operator's problem.
LOCK_WAIT_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 10.0
# A single migration may rewrite a big table; beyond ten minutes it should be split or run by hand.
STATEMENT_TIMEOUT_S = 600.0

# Runs under the lock, before the first file: the record table must exist to know what is applied.
BOOTSTRAP_SQL = """
CREATE SCHEMA IF NOT EXISTS pm;
CREATE TABLE IF NOT EXISTS pm.schema_migrations (
    version    integer     PRIMARY KEY CHECK (version > 0),
    name       text        NOT NULL UNIQUE,
    checksum   text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(Exception):
    """Base of every error `migrate` raises."""


class DatabaseUnavailableError(MigrationError, ConnectionError):
    """The database could not be reached."""


class MigrationLockTimeoutError(MigrationError, TimeoutError):
    """Another runner held the migration lock longer than LOCK_WAIT_TIMEOUT_S."""


class MigrationFileError(MigrationError):
    """A .sql file in the migrations directory is misnamed, or two files share a version."""


class MigrationChecksumError(MigrationError):
    """An applied migration file's contents changed since it was applied."""


class MigrationUnknownError(MigrationError):
    """The database records a migration version this checkout has no file for."""


class MigrationFailedError(MigrationError):
    """A migration file's SQL failed; its transaction was rolled back."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name, e.g. "0001_pm_schema.sql"
    sql: str
    checksum: str  # hex sha256 of the file's bytes


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every `NNNN_slug.sql` file in `directory`, in version order."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE_PATTERN.fullmatch(path.name)
        if match is None:
            raise MigrationFileError(f"{path}: name must look like 0001_what_it_does.sql")
        version = int(match["version"])
        if version == 0 or version in migrations:
            raise MigrationFileError(f"{path}: version {version} is zero or used twice")
        content = path.read_bytes()
        migrations[version] = Migration(
            version=version,
            name=path.name,
            sql=content.decode("utf-8"),
            checksum=hashlib.sha256(content).hexdigest(),
        )
    return [migrations[version] for version in sorted(migrations)]


def pending_migrations(migrations: list[Migration], applied: list[AppliedMigration]) -> list[Migration]:
    """The files still to apply, after checking that every applied one is here and unchanged."""
    by_version = {migration.version: migration for migration in migrations}
    for record in applied:
        migration = by_version.get(record.version)
        if migration is None:
            raise MigrationUnknownError(
                f"database has migration {record.name} (version {record.version}) that is not in this "
                "checkout; run a checkout that has it"
            )
        if migration.checksum != record.checksum:
            raise MigrationChecksumError(
                f"{migration.name} changed after it was applied (recorded sha256 {record.checksum[:12]}…, "
                f"file now {migration.checksum[:12]}…); restore it and add a new migration instead"
            )
    applied_versions = {record.version for record in applied}
    return [migration for migration in migrations if migration.version not in applied_versions]


async def migrate(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations in `directory` to the database; return the names applied."""
    migrations = load_migrations(directory)
    if not migrations:
        # Likely a non-editable install: sql/ is not packaged, only the repository has it.
        raise MigrationFileError(f"no migrations found in {directory}")
    try:
        connection = await asyncpg.connect(
            database_url,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=STATEMENT_TIMEOUT_S,
            target_session_attrs=target_session_attrs(database_url),  # the primary: migrations write
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.exceptions.TargetServerAttributeNotMatched) as exc:
        raise DatabaseUnavailableError(f"cannot connect to the database: {exc}") from exc
    try:
        # Session-level lock; closing the connection releases it too, so a crashed runner cannot
        # leave it held.
        try:
            await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY, timeout=LOCK_WAIT_TIMEOUT_S)
        except TimeoutError as exc:
            raise MigrationLockTimeoutError(
                f"another runner held the migration lock for over {LOCK_WAIT_TIMEOUT_S:.0f} s"
            ) from exc
        await connection.execute(BOOTSTRAP_SQL)
        applied = await _applied_migrations(connection)
        pending = pending_migrations(migrations, applied)
        for migration in pending:
            await _apply(connection, migration)
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await connection.close(timeout=CONNECT_TIMEOUT_S)
    return [migration.name for migration in pending]


async def _applied_migrations(connection: asyncpg.Connection) -> list[AppliedMigration]:
    rows = await connection.fetch("SELECT version, name, checksum FROM pm.schema_migrations ORDER BY version")
    return [AppliedMigration(version=row["version"], name=row["name"], checksum=row["checksum"]) for row in rows]


async def _apply(connection: asyncpg.Connection, migration: Migration) -> None:
    logger.info("applying migration %s", migration.name)
    try:
        async with connection.transaction():
            # No arguments: asyncpg uses the simple query protocol, which runs a multi-statement file.
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO pm.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationFailedError(f"{migration.name} failed and was rolled back: {exc}") from exc
