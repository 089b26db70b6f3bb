"""Proves that migration files load in version order and that edited or unknown applied files are refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pm.store.migrate import (
    MIGRATIONS_DIR,
    AppliedMigration,
    MigrationChecksumError,
    MigrationFileError,
    MigrationUnknownError,
    load_migrations,
    pending_migrations,
)


def _write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql, encoding="utf-8")


def test_repository_migrations_load_and_start_with_the_pm_schema() -> None:
    migrations = load_migrations(MIGRATIONS_DIR)
    assert migrations[0].name == "0001_pm_schema.sql"
    assert [migration.version for migration in migrations] == sorted({m.version for m in migrations})


def test_files_are_ordered_by_version_and_checksummed(tmp_path: Path) -> None:
    _write(tmp_path, "0002_second.sql", "SELECT 2;")
    _write(tmp_path, "0001_first.sql", "SELECT 1;")
    (tmp_path / "README.md").write_text("not a migration")
    migrations = load_migrations(tmp_path)
    assert [migration.name for migration in migrations] == ["0001_first.sql", "0002_second.sql"]
    assert migrations[0].checksum == hashlib.sha256(b"SELECT 1;").hexdigest()


@pytest.mark.parametrize(
    "names", [["1_short.sql"], ["0001_Upper.sql"], ["0001_a.sql", "0001_b.sql"], ["0000_zero.sql"]]
)
def test_misnamed_or_duplicate_files_are_refused(tmp_path: Path, names: list[str]) -> None:
    for name in names:
        _write(tmp_path, name, "SELECT 1;")
    with pytest.raises(MigrationFileError):
        load_migrations(tmp_path)


def test_pending_are_the_unapplied_files_in_order(tmp_path: Path) -> None:
    for name in ("0001_a.sql", "0002_b.sql", "0003_c.sql"):
        _write(tmp_path, name, f"-- {name}")
    first, second, third = load_migrations(tmp_path)
    applied = [AppliedMigration(version=first.version, name=first.name, checksum=first.checksum)]
    assert pending_migrations([first, second, third], applied) == [second, third]
    assert pending_migrations([first, second, third], []) == [first, second, third]


def test_an_applied_file_that_changed_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", "SELECT 1;")
    (migration,) = load_migrations(tmp_path)
    applied = [
        AppliedMigration(version=1, name="0001_a.sql", checksum=hashlib.sha256(b"SELECT 0;").hexdigest())
    ]
    with pytest.raises(MigrationChecksumError, match=r"0001_a\.sql"):
        pending_migrations([migration], applied)


def test_an_applied_version_without_a_file_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", "SELECT 1;")
    (migration,) = load_migrations(tmp_path)
    applied = [
        AppliedMigration(version=1, name=migration.name, checksum=migration.checksum),
        AppliedMigration(version=2, name="0002_gone.sql", checksum="0" * 64),
    ]
    with pytest.raises(MigrationUnknownError, match=r"0002_gone\.sql"):
        pending_migrations([migration], applied)
