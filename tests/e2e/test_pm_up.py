"""`pm up` as a user runs it (on the test's PostgreSQL and Valkey, with ports and a data dir of its own):
it starts every Procfile process, the PSP simulator included, funds the demo users, and then the README's
commands work: `pm send withdraw --from 1001 --amount 500.00` and `pm send topup --to 1001 --amount
1000.00` print every async state as it arrives and end SETTLED; a declined withdrawal ends FAILED with
exit 1; the balance is what they moved; Ctrl-C stops the fleet."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pm.store.migrate import migrate
from tests.support.fleet import free_port, write_streams_file

PM = str(Path(sys.executable).parent / "pm")
STATES = ["CREATED", "VALIDATED", "PRICED", "CLEARED", "AUTHORIZED"]


def shown_states(stdout: str) -> list[str]:
    return [line.split()[1] for line in stdout.splitlines() if line.startswith("  v")]


async def test_pm_up_runs_the_simulator_and_the_readme_commands_show_the_async_states(
    fresh_database, redis_url, tmp_path
) -> None:
    database_url = await fresh_database()
    await migrate(database_url)
    streams_file, _ = write_streams_file(tmp_path)
    http_port, sim_port = free_port(), free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PM_")},
        "PM_DATABASE_URL": database_url, "PM_REDIS_URL": redis_url, "PM_LEDGER_URL": database_url,
        "PM_STREAMS_FILE": str(streams_file), "PM_DATA_DIR": str(tmp_path / "data"),
        "PM_HTTP_PORT": str(http_port), "PM_PSP_SIM_PORT": str(sim_port),
        "PM_PSP_IPPS_URL": f"http://127.0.0.1:{sim_port}/ipps", "PM_PSP_QP_URL": f"http://127.0.0.1:{sim_port}/qp",
        "PM_PUBLIC_URL": f"http://127.0.0.1:{http_port}", "PM_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    log = (tmp_path / "up.log").open("w")
    up = await asyncio.to_thread(
        subprocess.Popen, [PM, "up"], env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while "OneWallet PM is running" not in (tmp_path / "up.log").read_text():
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "pm up did not come up"
            await asyncio.sleep(0.5)

        def send(*arguments: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([PM, "send", *arguments], env=environment, capture_output=True, text=True, timeout=90)

        withdrawal = await asyncio.to_thread(send, "withdraw", "--from", "1001", "--amount", "500.00")
        assert withdrawal.returncode == 0, withdrawal.stdout + withdrawal.stderr
        assert shown_states(withdrawal.stdout) == [*STATES, "SETTLED"], withdrawal.stdout
        declined = await asyncio.to_thread(send, "withdraw", "--from", "1001", "--amount", "500.13")
        assert declined.returncode == 1, declined.stdout + declined.stderr
        assert shown_states(declined.stdout) == [*STATES, "FAILED"] and "PSP_DECLINED" in declined.stdout
        top_up = await asyncio.to_thread(send, "topup", "--to", "1001", "--amount", "1000.00")
        assert top_up.returncode == 0, top_up.stdout + top_up.stderr
        assert shown_states(top_up.stdout) == [*STATES, "SETTLED"], top_up.stdout
        balance = await asyncio.to_thread(
            subprocess.run, [PM, "balance", "--user", "1001"], env=environment, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert "available 10500.00 THB, held 0.00" in balance.stdout, balance.stdout + balance.stderr
        # SIGTERM (how a supervisor stops it) stops the fleet, each process within its grace, and exits 0.
        up.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(up.wait, 60) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)  # Ctrl-C
            try:
                await asyncio.to_thread(up.wait, 60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
        log.close()
    assert up.returncode is not None
