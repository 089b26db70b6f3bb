"""`pm run all` runs the gateway, every stage and the poller in one process: a funded user's P2P settles
through it and the ledger stays clean; SIGTERM stops it gracefully (exit 0)."""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import aiohttp
import asyncpg

from ledger import open_ledger
from ledger.check import run_check
from pm.client import PMClient
from pm.dev.fleet import Fleet
from pm.store import keys
from pm.store.migrate import migrate
from tests.support.fleet import APP_OPERATIONS, APP_SCOPES, free_port, write_streams_file


async def test_everything_in_one_process(fresh_database, redis_url) -> None:
    database_url = await fresh_database()
    await migrate(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        app_key, app_secret = await keys.create_key(
            connection, name="all-app", scopes=APP_SCOPES, operations=APP_OPERATIONS
        )
        admin_key, admin_secret = await keys.create_key(
            connection, name="all-admin", scopes="admin", operations="ADMIN_ADJUSTMENT"
        )
    finally:
        await connection.close()
    with tempfile.TemporaryDirectory() as directory:
        streams_file, _ = write_streams_file(Path(directory))
        port = free_port()
        environment = {
            "PM_DATABASE_URL": database_url,
            "PM_REDIS_URL": redis_url,
            "PM_LEDGER_URL": database_url,
            "PM_STREAMS_FILE": str(streams_file),
            "PM_HTTP_PORT": str(port),
            "PM_LOG_LEVEL": "WARNING",
        }
        fleet = Fleet(environment=environment, log_dir=Path(directory))
        (process,) = fleet.start("all", command="pm run all")
        try:
            base_url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                for _ in range(300):
                    try:
                        async with session.get(f"{base_url}/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    assert process.poll() is None, fleet.logs("all")
                    await asyncio.sleep(0.1)
            async with PMClient(base_url, admin_key.key_id, admin_secret) as admin:
                funded = await admin.create_intent(
                    operation_type="ADMIN_ADJUSTMENT", amount_minor=5_000, currency="THB", recipient_id=7001, wait_s=10
                )
            async with PMClient(base_url, app_key.key_id, app_secret) as app:
                paid = await app.create_intent(
                    operation_type="P2P_TRANSFER", amount_minor=1_200, currency="THB", user_id=7001,
                    recipient_id=7002, wait_s=10,
                )  # fmt: skip
                balance = await app.balance("THB", user_id=7002)
            assert (funded["state"], paid["state"]) == ("SETTLED", "SETTLED")
            assert balance["posted_minor"] == 1_200
            async with open_ledger(database_url) as ledger:
                report = await run_check(ledger)
            assert report.ok, report.problems
        finally:
            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(process.wait, 30)
        assert exit_code == 0, fleet.logs("all")[-3000:]
