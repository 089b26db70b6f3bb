"""`pm reconcile` on real PostgreSQL, Valkey and the postgres ledger: after the pipeline settles, fails and
rejects intents it finds no mismatch (also in pages of two), then each kind of mismatch planted by hand is
found and named (a settled intent missing a leg, one with no channel, one whose legs differ from it, one with a leg its
settlement does not make, a failed intent with posted money, a rejected intent with a live hold, a
user's history off their balance, money on a user account without history), while a held intent in
flight is not reported; the command prints one line per mismatch and exits 1, and refuses an unmigrated
database in one line (exit 2)."""

from __future__ import annotations

import asyncio
import itertools
import json

import tigerbeetle as tb
from test_pm_rules_command import pm

import channels
from ledger import accounts
from pm.cli import reconciliation
from pm.domain.intent import OperationType
from tests.support.pipeline import Pipeline, isolated_topology, open_pipeline

P2P = OperationType.P2P_TRANSFER
_users = itertools.count(72_000)


async def settled_pipeline(pipeline: Pipeline, alice: int, bob: int) -> dict:
    """Fund alice, settle three P2P transfers to bob, and reject one for insufficient funds."""
    async with pipeline.stages():
        await pipeline.wait_finished([(await pipeline.fund(alice, 10_000)).id])
        sent = [await pipeline.submit(P2P, amount, alice, bob) for amount in (100, 200, 300)]
        refused = await pipeline.submit(P2P, 1_000_000, alice, bob)
        return await pipeline.wait_finished([intent.id for intent in sent] + [refused.id])


async def create(pipeline: Pipeline, transfers: list[tb.Transfer]) -> None:
    results = await pipeline.context.ledger.create_transfers(transfers)
    assert [r.status for r in results] == [tb.CreateTransferStatus.CREATED] * len(transfers), results


async def credit_without_history(pipeline: Pipeline, user_id: int, amount_minor: int) -> None:
    """Money straight onto a user account, past the pipeline: no intent, no history row."""
    await pipeline.context.ledger.create_accounts([accounts.user(user_id, "THB").to_tigerbeetle()])
    source, target = accounts.adjustments("THB").id, accounts.user(user_id, "THB").id
    gift = tb.Transfer(
        id=tb.id(), debit_account_id=source, credit_account_id=target, amount=amount_minor, ledger=764, code=900
    )
    await create(pipeline, [gift])


async def planted_intent(pipeline: Pipeline, state: str, sender: int, recipient: int, amount: int = 50):
    """An intent routed to INTERNAL_P2P and put in `state` by hand (no stage saw it)."""
    intent = await pipeline.submit(P2P, amount, sender, recipient, publish=False)
    error = "LIMIT_EXCEEDED" if state in ("REJECTED", "FAILED") else None
    await pipeline.context.pool.execute(
        "UPDATE pm.intent SET state = $2, channel = 'INTERNAL_P2P', error_code = $3 WHERE id = $1",
        intent.id, state, error,
    )  # fmt: skip
    (loaded,) = await pipeline.context.pool.fetch("SELECT state FROM pm.intent WHERE id = $1", intent.id)
    assert loaded["state"] == state
    return intent


async def test_a_clean_pipeline_reconciles_in_pages(fresh_database, redis_url) -> None:
    alice, bob = next(_users), next(_users)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        finished = await settled_pipeline(pipeline, alice, bob)
        assert sorted(str(i.state) for i in finished.values()) == ["REJECTED", "SETTLED", "SETTLED", "SETTLED"]
        report = reconciliation.ReconcileReport()
        await reconciliation.reconcile_intents(pipeline.context.pool, pipeline.context.ledger, report, 253, page_size=2)
        await reconciliation.reconcile_history(pipeline.context.pool, pipeline.context.ledger, report, page_size=1)
        assert (report.mismatches, report.intents_checked, report.users_checked) == ([], 5, 2)
        assert (await pipeline.check()).ok
        clean = await asyncio.to_thread(pm, "reconcile", database_url=pipeline.database_url)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert clean.stdout.strip() == "OK: 5 intent(s) and 2 user(s)' history match the ledger"


async def test_every_planted_mismatch_is_found(fresh_database, redis_url) -> None:
    alice, bob, carol = next(_users), next(_users), next(_users)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        pool, p2p = pipeline.context.pool, channels.REGISTRY["INTERNAL_P2P"]
        settled = [i for i in (await settled_pipeline(pipeline, alice, bob)).values() if str(i.state) == "SETTLED"]
        differs, failed, unexpected = sorted(settled, key=lambda i: i.amount_minor)

        # A SETTLED intent whose recipient leg never reached the ledger (hold and post only).
        missing = await planted_intent(pipeline, "SETTLED", alice, bob)
        await create(pipeline, [*p2p.authorize(missing), p2p.post_hold(missing, missing.amount_minor)])
        # A SETTLED intent whose amount is not what the ledger moved for it.
        await pool.execute("UPDATE pm.intent SET amount_minor = amount_minor + 1 WHERE id = $1", differs.id)
        # A SETTLED intent without fees that has a fee leg.
        transit, fees = accounts.transit("THB"), accounts.fees("THB")
        fee_leg = p2p.leg(unexpected, "fees", transit, fees, 7)
        await create(pipeline, [fee_leg, p2p.leg(unexpected, "correction", fees, transit, 7)])
        # A SETTLED intent no channel can have settled.
        unrouted = await planted_intent(pipeline, "SETTLED", alice, bob)
        await pool.execute("UPDATE pm.intent SET channel = NULL WHERE id = $1", unrouted.id)
        # A FAILED intent whose money was posted.
        await pool.execute(
            "UPDATE pm.intent SET state = 'FAILED', error_code = 'PSP_DECLINED' WHERE id = $1", failed.id
        )
        # A REJECTED intent with a live hold, and an AUTHORIZED one with a hold (in flight: not reported).
        held = await planted_intent(pipeline, "REJECTED", alice, bob)
        in_flight = await planted_intent(pipeline, "AUTHORIZED", alice, bob)
        await create(pipeline, p2p.authorize(held) + p2p.authorize(in_flight))
        # Bob's history says 5 more than his balance; carol has money and no history.
        await pool.execute(
            "UPDATE pm.history SET amount_minor = amount_minor + 5 WHERE user_id = $1 AND intent_id = $2",
            bob, unexpected.id,
        )  # fmt: skip
        await credit_without_history(pipeline, carol, 40)

        report = await reconciliation.reconcile(pool, pipeline.context.ledger)
        found = sorted((m.kind, m.subject) for m in report.mismatches)
        assert report.mismatch_count == len(report.mismatches)
        assert sorted(set(found)) == sorted(
            {
                ("settled-leg-missing", f"intent {missing.id}"),
                ("settled-leg-differs", f"intent {differs.id}"),
                ("settled-leg-unexpected", f"intent {unexpected.id}"),
                ("unsettled-posted-money", f"intent {failed.id}"),
                ("hold-pending", f"intent {held.id}"),
                ("intent-unreadable", f"intent {unrouted.id}"),
                ("history-balance", f"user:{bob}:THB"),
                ("history-balance", f"user:{alice}:THB"),  # the missing leg's hold was posted: no history
                ("history-total", "THB"),
            }
        ), found
        by_kind = {m.kind: m.detail for m in report.mismatches}
        assert f"transit:THB -> user:{bob}:THB amount 50 is not in the ledger" in by_kind["settled-leg-missing"]
        assert "amount 100 (expected 101)" in by_kind["settled-leg-differs"]
        assert "transit:THB -> fees:THB amount 7" in by_kind["settled-leg-unexpected"]
        assert by_kind["history-balance"].startswith("history sums to ")
        assert "40 is on user accounts without history" in by_kind["history-total"]
        # Two legs of the failed intent are posted (the post of its hold, the recipient's).
        assert [m.kind for m in report.mismatches].count("unsettled-posted-money") == 2

        listed = await asyncio.to_thread(pm, "reconcile", database_url=pipeline.database_url)
        assert listed.returncode == 1, listed.stderr
        lines = listed.stdout.strip().splitlines()
        assert len(lines) == report.mismatch_count + 1 and lines[-1].startswith(f"FAILED: {report.mismatch_count} ")
        as_json = json.loads(
            (await asyncio.to_thread(pm, "reconcile", "--json", database_url=pipeline.database_url)).stdout
        )
        assert as_json["ok"] is False and as_json["mismatch_count"] == report.mismatch_count


async def test_an_unmigrated_database_is_refused_in_one_line(fresh_database) -> None:
    url = await fresh_database()
    refused = await asyncio.to_thread(pm, "reconcile", database_url=url)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "run `pm db migrate` first" in line, line
    bad = await asyncio.to_thread(pm, "reconcile", "--pages", "3", database_url=url)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr
