"""Which PSP secrets a process may start with (issue 10, item 2): against the local simulator anything goes
(its values are public); against any other PSP URL every secret must be set, at least 32 bytes, and not
one of the simulator's public values, and the refusal names the variable without echoing a secret."""

from __future__ import annotations

import pytest

from pm.config.settings import Settings
from pm.psp.secrets import (
    SIMULATOR_API_KEY,
    SIMULATOR_IPPS_CALLBACK_SECRET,
    SIMULATOR_SETTINGS,
    configuration_problem,
    is_local_simulator,
)

STRONG = {
    "psp_api_key": "k" * 40,
    "psp_ipps_callback_secret": "i" * 40,
    "psp_qp_callback_secret": "q" * 40,
}
REAL_IPPS = {"psp_ipps_url": "https://ipps.example.com/ipps"}


def settings(**fields) -> Settings:
    base = {"psp_api_key": None, "psp_ipps_callback_secret": None, "psp_qp_callback_secret": None}
    return Settings(**{**base, **fields})


def test_no_psp_secret_has_a_default() -> None:
    empty = settings()
    assert (empty.psp_api_key, empty.psp_ipps_callback_secret, empty.psp_qp_callback_secret) == (None, None, None)
    fields = Settings.model_fields
    assert all(fields[name].default is None for name in SIMULATOR_SETTINGS)


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8090/ipps", True),
        ("http://localhost:8090/qp", True),
        ("http://[::1]:8090/ipps", True),
        ("https://127.0.0.1:8090/ipps", False),  # not how the simulator serves
        ("http://127.0.0.1:9999/ipps", False),  # another port: not our simulator
        ("http://10.0.0.5:8090/ipps", False),
        ("http://127.0.0.1.example.com:8090/ipps", False),
        ("http://127.0.0.1:notaport/ipps", False),
        ("https://ipps.example.com/ipps", False),
    ],
)
def test_only_the_local_simulator_counts_as_the_simulator(url: str, local: bool) -> None:
    assert is_local_simulator(url, settings()) is local


def test_the_local_simulator_needs_no_secrets() -> None:
    assert configuration_problem(settings()) is None
    assert configuration_problem(settings(**SIMULATOR_SETTINGS)) is None


@pytest.mark.parametrize(
    ("fields", "named", "reason"),
    [
        ({}, "PM_PSP_API_KEY", "is unset"),
        ({**STRONG, "psp_qp_callback_secret": None}, "PM_PSP_QP_CALLBACK_SECRET", "is unset"),
        ({**STRONG, "psp_api_key": "short-key"}, "PM_PSP_API_KEY", "shorter than 32 bytes"),
        ({**STRONG, "psp_api_key": SIMULATOR_API_KEY}, "PM_PSP_API_KEY", "simulator's public value"),
        (
            {**STRONG, "psp_ipps_callback_secret": SIMULATOR_IPPS_CALLBACK_SECRET},
            "PM_PSP_IPPS_CALLBACK_SECRET",
            "simulator's public value",
        ),
        # The QP secret matters even when only IPPS is real: a forged top-up credits what IPPS pays out.
        ({**STRONG, "psp_qp_callback_secret": "q" * 31}, "PM_PSP_QP_CALLBACK_SECRET", "shorter than 32 bytes"),
    ],
)
def test_a_real_psp_needs_every_secret_set_long_and_not_public(fields, named: str, reason: str) -> None:
    problem = configuration_problem(settings(**REAL_IPPS, **fields))
    assert problem is not None and problem.startswith(named) and reason in problem
    assert "PM_PSP_IPPS_URL" in problem and "\n" not in problem
    for secret in fields.values():
        if secret and secret not in (SIMULATOR_API_KEY, SIMULATOR_IPPS_CALLBACK_SECRET):
            assert secret not in problem  # never echoed


def test_a_real_psp_with_strong_secrets_may_start() -> None:
    assert configuration_problem(settings(**REAL_IPPS, **STRONG)) is None
    assert configuration_problem(settings(psp_qp_url="https://qp.example.com/qp", **STRONG)) is None
