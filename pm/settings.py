"""The one place that reads the environment: every `PM_*` variable becomes a field of `Settings`.

    settings = Settings()                      # reads PM_* from the environment
    settings.effective_ledger_url(database_url)

Every field is documented in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    # `env_ignore_empty`: `PM_DATABASE_URL=` (set but empty) means "not configured", which is what a
    # shell user who clears a variable expects, instead of a connection attempt to "".
    model_config = SettingsConfigDict(env_prefix="PM_", env_ignore_empty=True, extra="ignore", frozen=True)

    database_url: str | None = None
    redis_url: str | None = None
    # Comma-separated TigerBeetle replica addresses, e.g. "3000,3001" or "10.0.0.1:3000,10.0.0.2:3000".
    tigerbeetle_addresses: str | None = None
    tigerbeetle_cluster_id: int = Field(default=0, ge=0)
    ledger_url: str | None = None
    # Resolved once, when the settings are read, so a later chdir cannot move the data.
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".data")
    log_level: LogLevel = "INFO"
    # Read only by the test suite (tests/conftest.py): servers to test against instead of embedded ones.
    test_database_url: str | None = None
    test_redis_url: str | None = None

    @field_validator("tigerbeetle_addresses")
    @classmethod
    def _normalize_addresses(cls, value: str | None) -> str | None:
        # "3000, 3001" and "3000,3001" must name the same cluster; an all-blank value means "unset".
        if value is None:
            return None
        addresses = [address.strip() for address in value.split(",") if address.strip()]
        return ",".join(addresses) or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    def effective_ledger_url(self, database_url: str | None) -> str:
        """The ledger to open: PM_LEDGER_URL if set; else TigerBeetle when addresses are set; else the
        `postgres` backend on `database_url` (the configured or the embedded PostgreSQL)."""
        if self.ledger_url is not None:
            return self.ledger_url
        if self.tigerbeetle_addresses is not None:
            return f"tigerbeetle://{self.tigerbeetle_addresses}?cluster={self.tigerbeetle_cluster_id}"
        assert database_url, "the postgres ledger needs a database URL: start or configure PostgreSQL first"
        return database_url

    def ledger_needs_database(self) -> bool:
        """True when the ledger lives in PostgreSQL, so a database must be running to open it."""
        return self.ledger_url is None and self.tigerbeetle_addresses is None
