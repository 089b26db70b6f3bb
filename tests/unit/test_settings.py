"""Proves that Settings reads every PM_* variable and picks the ledger URL by the documented rules."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest

from ledger.open import parse_ledger_url
from pm.config.settings import Settings

DATABASE_URL = "postgresql://pm@db.example/onewallet"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own PM_* variables must not leak into what these tests see.
    for name in list(os.environ):
        if name.startswith("PM_"):
            monkeypatch.delenv(name)


def test_defaults_when_nothing_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.tigerbeetle_addresses is None
    assert settings.tigerbeetle_cluster_id == 0
    assert settings.ledger_url is None
    assert settings.data_dir == tmp_path / ".data"
    assert settings.log_level == "INFO"
    assert settings.wallet_currency == "THB"
    # Retention (issue 12, item 9): delivered webhooks a week, PSP callback events 30 days.
    assert (settings.webhook_retention_s, settings.psp_event_retention_s) == (7 * 86_400, 30 * 86_400)


def test_reads_prefixed_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("PM_REDIS_URL", "redis://cache.example:6379/0")
    monkeypatch.setenv("PM_TIGERBEETLE_ADDRESSES", "3000,3001")
    monkeypatch.setenv("PM_TIGERBEETLE_CLUSTER_ID", "7")
    monkeypatch.setenv("PM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PM_LOG_LEVEL", "debug")
    monkeypatch.setenv("PM_WALLET_CURRENCY", "USD")
    settings = Settings()
    assert settings.database_url == DATABASE_URL
    assert settings.redis_url == "redis://cache.example:6379/0"
    assert settings.tigerbeetle_addresses == "3000,3001"
    assert settings.tigerbeetle_cluster_id == 7
    assert settings.data_dir == tmp_path / "data"
    assert settings.log_level == "DEBUG"
    assert settings.wallet_currency == "USD"


def test_empty_variable_means_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_DATABASE_URL", "")
    monkeypatch.setenv("PM_TIGERBEETLE_ADDRESSES", " , ")
    settings = Settings()
    assert settings.database_url is None
    assert settings.tigerbeetle_addresses is None


def test_relative_data_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PM_DATA_DIR", "state")
    assert Settings().data_dir == tmp_path / "state"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PM_TIGERBEETLE_CLUSTER_ID", "abc"),
        ("PM_TIGERBEETLE_CLUSTER_ID", "-1"),
        ("PM_LOG_LEVEL", "loud"),
        # The limits stage compares amounts in Lua doubles: a larger intent would stop it (an assertion).
        ("PM_INTENT_AMOUNT_MINOR_MAX", str(2**53)),
        # The wallet's currency must be one the ledger has (ledger.accounts.CURRENCY_LEDGER).
        ("PM_WALLET_CURRENCY", "XXX"),
        ("PM_WALLET_CURRENCY", "thb"),
        # A delivered webhook is kept at least an hour, a PSP event at least a day (past any hold).
        ("PM_WEBHOOK_RETENTION_S", "3599"),
        ("PM_PSP_EVENT_RETENTION_S", "86399"),
        ("PM_PSP_EVENT_RETENTION_S", "soon"),
    ],
)
def test_invalid_values_are_refused(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_ledger_url_wins_over_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_LEDGER_URL", "memory://")
    monkeypatch.setenv("PM_TIGERBEETLE_ADDRESSES", "3000")
    settings = Settings()
    assert settings.effective_ledger_url(DATABASE_URL) == "memory://"
    assert not settings.ledger_needs_database()


def test_tigerbeetle_addresses_make_a_tigerbeetle_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_TIGERBEETLE_ADDRESSES", "3000, 3001")
    monkeypatch.setenv("PM_TIGERBEETLE_CLUSTER_ID", "5")
    settings = Settings()
    url = "tigerbeetle://3000,3001?cluster=5&request_timeout_ms=5000"
    assert settings.effective_ledger_url(DATABASE_URL) == settings.effective_ledger_url(None) == url
    assert not settings.ledger_needs_database()


def test_cluster_id_defaults_to_zero_in_the_tigerbeetle_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_TIGERBEETLE_ADDRESSES", "127.0.0.1:3000")
    assert Settings().effective_ledger_url(None) == "tigerbeetle://127.0.0.1:3000?cluster=0&request_timeout_ms=5000"


def test_the_tigerbeetle_request_timeout_goes_into_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_TIGERBEETLE_ADDRESSES", "3000")
    monkeypatch.setenv("PM_TIGERBEETLE_REQUEST_TIMEOUT_MS", "750")
    url = Settings().effective_ledger_url(None)
    assert url == "tigerbeetle://3000?cluster=0&request_timeout_ms=750"
    assert parse_ledger_url(url).request_timeout_ms == 750
    monkeypatch.setenv("PM_TIGERBEETLE_REQUEST_TIMEOUT_MS", "0")
    with pytest.raises(pydantic.ValidationError, match="tigerbeetle_request_timeout_ms"):
        Settings()


def test_otherwise_the_ledger_lives_in_the_given_database() -> None:
    settings = Settings()
    assert settings.ledger_needs_database()
    # The argument is the database actually in use: PM_DATABASE_URL or the embedded server's URL.
    embedded_url = "postgresql://postgres@/onewallet?host=/srv/.data/postgres&port=5432"
    assert settings.effective_ledger_url(embedded_url) == embedded_url


def test_waiting_for_redis_replicas_is_refused_on_a_cluster() -> None:
    with pytest.raises(ValueError, match="PM_REDIS_LIMITS_WAIT_REPLICAS"):
        Settings(redis_url="redis+cluster://127.0.0.1:7000,127.0.0.1:7001", redis_limits_wait_replicas=1)
    assert Settings(redis_url="redis://127.0.0.1:6379/0", redis_limits_wait_replicas=1).redis_limits_wait_replicas == 1
