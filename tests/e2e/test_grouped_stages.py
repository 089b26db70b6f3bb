"""Stages grouped into processes (`pm run validation,fees,limits`, `pm run dispatch,settlement,history,poller`):
each stage is still a consumer group of its own, so P2P payments settle through two stage processes with
the right balances, history rows and a clean ledger, nothing is left pending, and each process's /metrics
counts every stage it runs."""

from __future__ import annotations

import asyncio
import itertools

from tests.support.fleet import running_fleet

_users = itertools.count(760_000)
FIRST_GROUP = "validation,fees,limits"
SECOND_GROUP = "dispatch,settlement,history,poller"
PAYMENTS = 20
AMOUNT_MINOR = 1_250
FUNDING_MINOR = 50_000


async def test_payments_settle_through_grouped_stage_processes(fresh_database, redis_url) -> None:
    counts = {name: 0 for name in (*FIRST_GROUP.split(","), *SECOND_GROUP.split(","))}
    async with running_fleet(fresh_database, redis_url, counts={**counts, FIRST_GROUP: 1, SECOND_GROUP: 1}) as fleet:
        await _payments_settle(fleet)


async def _payments_settle(fleet) -> None:
    started = {process_type for process_type, ports in fleet.metrics_ports.items() if ports}
    assert started == {FIRST_GROUP, SECOND_GROUP, "outbox"}  # no process of a stage of its own
    senders = [next(_users) for _ in range(4)]
    recipient = next(_users)
    for sender in senders:
        await fleet.fund(sender, FUNDING_MINOR)
    intents = await asyncio.gather(*(
        fleet.app.create_intent(
            operation_type="P2P_TRANSFER", amount_minor=AMOUNT_MINOR, currency="THB",
            user_id=senders[index % len(senders)], recipient_id=recipient, wait_s=20,
        )
        for index in range(PAYMENTS)
    ))  # fmt: skip
    assert {intent["state"] for intent in intents} == {"SETTLED"}
    await fleet.wait_finished([intent["id"] for intent in intents])
    per_sender = PAYMENTS // len(senders)
    for sender in senders:
        assert await fleet.balance(sender) == (FUNDING_MINOR - per_sender * AMOUNT_MINOR, 0)
    assert await fleet.balance(recipient) == (PAYMENTS * AMOUNT_MINOR, 0)
    history = await fleet.app.history(user_id=recipient, limit=50)
    assert [item["amount_minor"] for item in history["items"]] == [AMOUNT_MINOR] * PAYMENTS
    report = await fleet.check()  # debits = credits per ledger, transit accounts back at 0
    assert report.ok, report.problems
    assert (await fleet.reconcile()).mismatches == []
    assert await fleet.pending_entries() == 0
    await _each_process_counts_its_stages(fleet)


async def _each_process_counts_its_stages(fleet) -> None:
    first = await fleet.metrics(FIRST_GROUP)
    for _ in range(50):  # the poller measures every second
        second = await fleet.metrics(SECOND_GROUP)
        if "pm_stream_pending_entries{" in second:
            break
        await asyncio.sleep(0.1)
    for stage in FIRST_GROUP.split(","):
        assert f'pm_stage_messages_total{{outcome="applied",stage="{stage}"}}' in first
    for stage in ("dispatch", "settlement"):
        assert f'pm_stage_messages_total{{outcome="applied",stage="{stage}"}}' in second
    assert 'pm_stage_batch_seconds_count{stage="history"}' in second
    assert "pm_stream_pending_entries{" in second  # the poller runs there
