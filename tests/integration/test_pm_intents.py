"""`pm intents show ID` and `pm intents stuck` as the installed command, on real PostgreSQL, Valkey and the
postgres ledger: a settled transfer shows its versions with times, its legs by derived id (hold posted,
post and recipient created, no void), its PSP events and webhooks; a held intent shows its hold pending;
`stuck` lists the non-final intents older than N seconds and not the others; a malformed id or bound exits
2 and an unknown intent 1, in one line each."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

import pytest
from test_pm_rules_command import pm

import channels
from ledger.accounts import transfer_id
from pm.cli import intents
from pm.cli.common import CommandError
from pm.config.settings import Settings
from pm.domain.intent import OperationType
from tests.support.pipeline import isolated_topology, open_pipeline

P2P = OperationType.P2P_TRANSFER


async def test_show_and_stuck(fresh_database, redis_url) -> None:
    alice, bob = 73_001, 73_002
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        pool, url = pipeline.context.pool, pipeline.database_url
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 1_000)).id])
            settled = await pipeline.submit(P2P, 250, alice, bob)
            await pipeline.wait_finished([settled.id])
        await pool.execute(
            "INSERT INTO pm.psp_event (channel, event_id, intent_id, status) VALUES ('IPPS_TRANSFER', 'ev-1', $1, 'X')",
            settled.id,
        )
        await pool.execute(
            "INSERT INTO pm.outbox (event_id, kind, intent_id, version, merchant_id, payload, last_error)"
            " VALUES ($1, 'merchant_webhook', $2, 6, 501, '{}', 'HTTP 500')",
            uuid.uuid4(), settled.id,
        )  # fmt: skip
        waiting = await pipeline.submit(P2P, 40, alice, bob, publish=False)  # CREATED, no stage sees it
        held = await pipeline.submit(P2P, 30, alice, bob, publish=False)
        await pool.execute("UPDATE pm.intent SET state = 'AUTHORIZED', channel = 'INTERNAL_P2P' WHERE id = $1", held.id)
        (loaded,) = await pool.fetch("SELECT * FROM pm.intent WHERE id = $1", held.id)
        p2p = channels.REGISTRY["INTERNAL_P2P"]
        await pipeline.context.ledger.create_transfers(p2p.authorize(held))

        shown = await asyncio.to_thread(pm, "intents", "show", str(settled.id), "--json", database_url=url)
        assert shown.returncode == 0, shown.stderr
        detail = json.loads(shown.stdout)
        assert detail["intent"]["state"] == "SETTLED" and detail["intent"]["finished"] is True
        assert [v["state"] for v in detail["versions"]] == [
            "CREATED", "VALIDATED", "PRICED", "CLEARED", "AUTHORIZED", "SETTLED",
        ]  # fmt: skip
        statuses = {t["id"]: t["status"] for t in detail["transfers"]}
        assert statuses == {
            f"{transfer_id(settled.id, 'hold'):032x}": "hold posted",
            f"{transfer_id(settled.id, 'post'):032x}": "created",
            f"{transfer_id(settled.id, 'recipient'):032x}": "created",
            f"{transfer_id(settled.id, 'void'):032x}": "absent",
        }, detail["transfers"]
        assert [(e["event_id"], e["status"]) for e in detail["psp_events"]] == [("ev-1", "X")]
        assert [(w["merchant_id"], w["last_error"]) for w in detail["webhooks"]] == [(501, "HTTP 500")]
        text = await asyncio.to_thread(pm, "intents", "show", str(settled.id), database_url=url)
        assert (
            f"hold {transfer_id(settled.id, 'hold'):032x} user:{alice}:THB -> transit:THB amount 250: hold posted"
            in text.stdout
        )
        assert f"transit:THB -> user:{bob}:THB amount 250: created at " in text.stdout
        assert "merchant=501 attempts=0 next attempt" in text.stdout and "ev-1: X" in text.stdout

        pending = await asyncio.to_thread(pm, "intents", "show", str(held.id), database_url=url)
        assert pending.returncode == 0 and "amount 30: hold pending (expires 20" in pending.stdout, pending.stdout

        stuck = await asyncio.to_thread(pm, "intents", "stuck", "--older-than", "0", "--json", database_url=url)
        assert stuck.returncode == 0, stuck.stderr
        assert {row["id"] for row in json.loads(stuck.stdout)} == {str(waiting.id), str(held.id)}
        none = await asyncio.to_thread(pm, "intents", "stuck", "--older-than", "3600", database_url=url)
        assert none.stdout.strip() == "0 non-final intent(s) older than 3600 s"

        for arguments, code in ((["show", "not-a-uuid"], 2), (["show", str(uuid.uuid4())], 1)):
            refused = await asyncio.to_thread(pm, "intents", *arguments, database_url=url)
            assert refused.returncode == code, (arguments, refused)
            assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        # Bad bounds are refused before anything is opened (in-process: no database named at all).
        for older_than, limit in ((-1, 100), (0, 0), (0, 10_001)):
            bounds = argparse.Namespace(older_than=older_than, limit=limit, json=False)
            with pytest.raises(CommandError) as refused_bounds:
                await intents._intents_stuck(Settings(database_url="postgresql://nowhere.invalid/x"), bounds)
            assert refused_bounds.value.exit_code == 2 and "\n" not in str(refused_bounds.value)
        assert loaded["state"] == "AUTHORIZED"
        assert await pool.fetchval("SELECT state FROM pm.intent WHERE id = $1", held.id) == "AUTHORIZED"
