"""`pm balances snapshot` as the installed command, on real PostgreSQL, Valkey and the postgres ledger:
before any snapshot it says there is none; `--take` snapshots the whole ledger and lists it, each user's
row equal to the ledger (`--json`), `--kind` and `--limit` with `--after` page through it; a bad --limit,
--after or --kind exits 2 in one line with nothing written."""

from __future__ import annotations

import asyncio
import json

from test_pm_rules_command import pm

from ledger import accounts
from ledger.check import all_accounts
from pm.domain.intent import OperationType
from tests.support.pipeline import isolated_topology, open_pipeline

P2P = OperationType.P2P_TRANSFER
ALICE, BOB = 82_001, 82_002


async def test_take_list_and_page(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        url = pipeline.database_url
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(ALICE, 9_000)).id])
            await pipeline.wait_finished([(await pipeline.submit(P2P, 4_000, ALICE, BOB)).id])

        empty = await asyncio.to_thread(pm, "balances", "snapshot", database_url=url)
        assert empty.returncode == 0, empty.stderr
        assert "no accounts in the snapshot" in empty.stdout

        taken = await asyncio.to_thread(
            pm, "balances", "snapshot", "--take", "--kind", "user", "--json", database_url=url
        )
        assert taken.returncode == 0, taken.stderr
        shown = json.loads(taken.stdout)
        ledger_accounts = {a.id: a for a in await all_accounts(pipeline.context.ledger)}
        assert shown["taken"]["accounts"] == len(ledger_accounts) == 5  # two users, adjustments, transit, fees
        assert shown["next_after"] is None
        users = {item["user_id"]: item for item in shown["items"]}
        assert set(users) == {ALICE, BOB}
        for user, posted_minor in ((ALICE, 5_000), (BOB, 4_000)):
            account = ledger_accounts[accounts.user(user, "THB").id]
            item = users[user]
            assert item["account_id"] == str(account.id) and item["name"] == f"user:{user}:THB"
            balances = (item["posted_minor"], item["pending_minor"], item["available_minor"])
            assert balances == (posted_minor, 0, posted_minor)
            assert item["credits_posted"] - item["debits_posted"] == account.credits_posted - account.debits_posted

        first = await asyncio.to_thread(pm, "balances", "snapshot", "--limit", "3", database_url=url)
        assert first.returncode == 0, first.stderr
        lines = first.stdout.splitlines()
        assert len(lines) == 5 and lines[-1].startswith("more: --after ")  # header, 3 accounts, more
        after = lines[-1].removeprefix("more: --after ")
        rest = await asyncio.to_thread(pm, "balances", "snapshot", "--after", after, "--json", database_url=url)
        listed = json.loads(rest.stdout)["items"]
        assert len(listed) == 2 and int(listed[0]["account_id"]) > int(after)
        names = {line.split()[0] for line in lines[1:4]} | {item["name"] for item in listed}
        assert names == {f"user:{ALICE}:THB", f"user:{BOB}:THB", "transit:THB", "adjustments:THB", "fees:THB"}


async def test_bad_arguments_exit_2_with_nothing_written(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        url = pipeline.database_url
        for arguments, message in (
            (("--limit", "0"), "--limit must be from 1 to 10,000"),
            (("--limit", "10001"), "--limit must be from 1 to 10,000"),
            (("--after", "-1"), "--after must be an account id"),
            (("--after", str(2**128)), "--after must be an account id"),
            (("--after", "abc"), "invalid int value"),
            (("--kind", "USER"), "invalid choice"),
        ):
            refused = await asyncio.to_thread(pm, "balances", "snapshot", "--take", *arguments, database_url=url)
            assert refused.returncode == 2, (arguments, refused.stdout, refused.stderr)
            assert message in refused.stderr, (arguments, refused.stderr)
        assert await pipeline.context.pool.fetchval("SELECT count(*) FROM pm.account_balance_snapshot") == 0
