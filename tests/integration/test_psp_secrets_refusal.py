"""`pm run` and `pm up` as an operator starts them (issue 10, item 2): a process whose PSP URL is not the
local simulator's refuses to start (exit 2, one line on stderr naming the variable) while a PSP secret is
unset, short or the simulator's public value, before it touches any server; with real secrets it starts,
and against the local simulator it starts with none."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pm.psp.secrets import SIMULATOR_ENVIRONMENT

PM = str(Path(sys.executable).parent / "pm")
REAL = {"PM_PSP_IPPS_URL": "https://ipps.example.com/ipps", "PM_PSP_QP_URL": "https://qp.example.com/qp"}
STRONG = {
    "PM_PSP_API_KEY": "k" * 43,
    "PM_PSP_IPPS_CALLBACK_SECRET": "i" * 43,
    "PM_PSP_QP_CALLBACK_SECRET": "q" * 43,
}
# Servers nobody listens on: a process that got past the check would fail differently (and later).
NOWHERE = {"PM_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "PM_REDIS_URL": "redis://127.0.0.1:1/0"}


def environment(**variables: str) -> dict[str, str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("PM_PSP_")}
    return {**clean, **NOWHERE, **variables}


@pytest.mark.parametrize("command", [["run", "gateway"], ["run", "settlement"], ["run", "ipps-connector"], ["up"]])
@pytest.mark.parametrize(
    ("secrets", "named"),
    [
        ({}, "PM_PSP_API_KEY"),
        (SIMULATOR_ENVIRONMENT, "PM_PSP_API_KEY"),
        ({**STRONG, "PM_PSP_QP_CALLBACK_SECRET": "too-short"}, "PM_PSP_QP_CALLBACK_SECRET"),
    ],
    ids=["unset", "simulator-values", "short"],
)
def test_a_process_for_a_real_psp_refuses_to_start_without_real_secrets(command, secrets, named) -> None:
    done = subprocess.run(
        [PM, *command], env=environment(**REAL, **secrets), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pm: refusing to start: ") and named in lines[0], done.stderr
    for value in secrets.values():
        assert value not in done.stderr


async def test_with_real_secrets_a_process_for_a_real_psp_starts(postgres_url: str, redis_url: str) -> None:
    variables = {**REAL, **STRONG, "PM_DATABASE_URL": postgres_url, "PM_REDIS_URL": redis_url}
    for secrets in (STRONG, {}):  # ... and one for the local simulator starts without any secret
        env = environment(**variables) if secrets else environment(PM_DATABASE_URL=postgres_url, PM_REDIS_URL=redis_url)
        process = await asyncio.create_subprocess_exec(
            PM, "run", "settlement", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(process.wait(), 3)  # still running: it started
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert b"refusing to start" not in stderr
