"""Proves that `pm` reports bad configuration in one line with exit code 2 and never prints passwords."""

from __future__ import annotations

import pytest

from pm.cli import main as cli
from pm.cli import run as run_command
from pm.dev.embedded import with_database


def test_bad_configuration_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PM_TIGERBEETLE_CLUSTER_ID", "not-a-number")
    assert cli.main(["db", "migrate"]) == cli.EXIT_CANNOT_RUN
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1
    assert "PM_TIGERBEETLE_CLUSTER_ID" in error_lines[0]


def test_unreachable_database_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    monkeypatch.setenv("PM_DATABASE_URL", "postgresql://pm:secret@127.0.0.1:1/onewallet")
    assert cli.main(["db", "migrate"]) == cli.EXIT_CANNOT_RUN
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1
    assert "127.0.0.1:1" in error_lines[0]
    assert "secret" not in error_lines[0]


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://pm:secret@db:5432/onewallet", "postgresql://pm:***@db:5432/onewallet"),
        ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://postgres@/onewallet?host=/srv/pg", "postgresql://postgres@/onewallet?host=/srv/pg"),
        ("tigerbeetle://3000,3001?cluster=0", "tigerbeetle://3000,3001?cluster=0"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, redacted: str) -> None:
    assert cli.redact_url(url) == redacted


def test_with_database_replaces_only_the_database() -> None:
    assert (
        with_database("postgresql://postgres@/postgres?host=/srv/pg&port=5432", "pm_test_1")
        == "postgresql://postgres@/pm_test_1?host=/srv/pg&port=5432"
    )
    assert with_database("postgresql://pm:pw@db:5432/postgres", "other") == "postgresql://pm:pw@db:5432/other"


@pytest.mark.parametrize("process", ["gateway", "stages", "all", "validation,fees,limits", "dispatch,poller"])
def test_run_takes_a_type_or_a_group_of_stages(process: str) -> None:
    assert run_command.process_type(process) == process


@pytest.mark.parametrize(
    "process", ["frobnicate", "gateway,validation", "validation,outbox", "fees,fees", "validation,", "all,history"]
)
def test_run_refuses_what_cannot_share_a_process(process: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", process])
    assert exit_info.value.code == 2
    assert "comma-separated" in capsys.readouterr().err
