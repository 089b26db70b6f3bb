"""Every metric the dashboard (ops/grafana/pm.json) and the alert rules (ops/prometheus/alerts.yml) name is
exported by a running fleet: a small fleet settles a few intents (and refuses one), every process's
/metrics is scraped, and each name the PromQL expressions select is in some process's exposition. The
ones the alerts stand on carry real values: POST→final latencies observed, ledger request sizes and
latencies, and the poller's periodic ledger check (transit at zero, no problem, a recent time)."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fleet import RunningFleet, running_fleet
from tests.support.ops_files import exported_names, expressions, metric_names

_users = itertools.count(700_000)


async def scrape_all(fleet: RunningFleet) -> dict[str, str]:
    """Process name (type.index) -> its exposition, the gateway's included."""
    expositions = {}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fleet.base_url}/metrics") as response:
            assert response.status == 200
            expositions["gateway"] = await response.text()
        for process_type, ports in fleet.metrics_ports.items():
            for index, port in enumerate(ports):
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200, process_type
                    expositions[f"{process_type}.{index}"] = await response.text()
    return expositions


def samples(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    ]


async def transfer(fleet: RunningFleet, sender: int, recipient: int, amount_minor: int) -> dict:
    return await fleet.app.create_intent(
        operation_type="P2P_TRANSFER", amount_minor=amount_minor, currency="THB", user_id=sender,
        recipient_id=recipient, wait_s=10,
    )  # fmt: skip


async def test_every_metric_the_dashboard_and_alerts_name_is_exported(fresh_database, redis_url) -> None:
    async with running_fleet(fresh_database, redis_url, extra_environment={"PM_LEDGER_CHECK_INTERVAL_S": "1"}) as fleet:
        alice, bob = next(_users), next(_users)
        await fleet.fund(alice, 10_000)
        created = await asyncio.gather(*(transfer(fleet, alice, bob, amount) for amount in (100, 200, 300, 50_000)))
        assert sorted(intent["state"] for intent in created) == ["REJECTED", "SETTLED", "SETTLED", "SETTLED"]
        await fleet.wait_finished([intent["id"] for intent in created])
        report = await fleet.check()
        assert report.ok, report.problems
        assert await fleet.balance(bob) == (600, 0)

        checked_after_s = time.time()
        deadline_s = time.monotonic() + 30
        while True:  # the poller checks the ledger every second here, and measures every second
            expositions = await scrape_all(fleet)
            poller = expositions["poller.0"]
            stamps = samples(poller, "pm_ledger_check_timestamp_seconds")
            if stamps and stamps[0][1] > checked_after_s and samples(poller, "pm_intent_open_oldest_seconds"):
                break
            assert time.monotonic() < deadline_s, "the poller's ledger check did not run"
            await asyncio.sleep(0.3)

    exported = set().union(*(exported_names(text) for text in expositions.values()))
    named = set().union(*(metric_names(expression) for expression in expressions()))
    assert len(named) >= 25
    assert named <= exported, f"named but exported by no process: {sorted(named - exported)}"

    settlement, dispatch = expositions["settlement.0"], expositions["dispatch.0"]
    settled = dict(
        (labels["state"], value) for labels, value in samples(settlement, "pm_intent_end_to_end_seconds_count")
    )
    assert settled.get("SETTLED", 0) >= 3
    assert (
        dict((labels["state"], value) for labels, value in samples(dispatch, "pm_intent_end_to_end_seconds_count")).get(
            "REJECTED", 0
        )
        >= 1
    )  # refused for insufficient funds at dispatch
    for exposition in (settlement, dispatch):
        assert any(value > 0 for _, value in samples(exposition, "pm_ledger_request_seconds_count"))
        assert any(value > 0 for _, value in samples(exposition, "pm_ledger_request_events_count"))
    transit = {
        (labels["currency"], labels["balance"]): value for labels, value in samples(poller, "pm_ledger_transit_minor")
    }
    assert transit[("THB", "posted")] == 0 and transit[("THB", "pending")] == 0
    assert samples(poller, "pm_ledger_check_problems") == [({}, 0.0)]
