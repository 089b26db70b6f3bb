"""The stages' counters are added up per label within a batch (one labels() lookup per state or
status, not per intent): the totals must still be exact, one per finished intent and per ledger result.
And the claim loop's log: an outage is one line a round, a bug a traceback."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis.exceptions
import tigerbeetle as tb
from prometheus_client import REGISTRY

from consumers.context import StageContext
from consumers.runtime import BatchOutcome, StageRunner
from ledger import open_ledger
from pm.config.topology import load_topology
from pm.domain.intent import Intent, OperationType, State
from pm.store.intents import TransitionResult

CREATED_AT = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def _value(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _result(state: State, applied: bool, seconds: float) -> TransitionResult:
    intent = Intent(
        id=uuid.uuid4(), state=state, version=6, operation_type=OperationType.P2P_TRANSFER, amount_minor=100,
        currency="THB", sender_id=1, recipient_id=2, created_at=CREATED_AT,
        updated_at=CREATED_AT + timedelta(seconds=seconds),
    )  # fmt: skip
    return TransitionResult(applied=applied, intent=intent)


async def _handler(intents, context):  # never called: _observe only
    return []


def test_finished_intents_are_counted_one_each_per_state() -> None:
    topology = load_topology()
    context = StageContext(pool=None, ledger=None, redis=None, topology=topology)  # type: ignore[arg-type]
    runner = StageRunner(topology.stage("settlement"), context, handler=_handler)
    before = {
        state: (
            _value("pm_intents_finished_total", {"state": state}),
            _value("pm_intent_end_to_end_seconds_count", {"state": state}),
            _value("pm_intent_end_to_end_seconds_sum", {"state": state}),
        )
        for state in ("SETTLED", "REJECTED")
    }
    results = [
        _result(State.SETTLED, True, 0.25),
        _result(State.SETTLED, True, 0.5),
        _result(State.REJECTED, True, 2.0),
        _result(State.SETTLED, False, 9.0),  # not applied here: another consumer's, not counted
        _result(State.AUTHORIZED, True, 9.0),  # not final
    ]
    runner._observe(results, BatchOutcome(applied=4, stale=1), 0.01)
    after = {
        state: (
            _value("pm_intents_finished_total", {"state": state}) - before[state][0],
            _value("pm_intent_end_to_end_seconds_count", {"state": state}) - before[state][1],
            _value("pm_intent_end_to_end_seconds_sum", {"state": state}) - before[state][2],
        )
        for state in ("SETTLED", "REJECTED")
    }
    # Other tests in this process observed too: the sums' differences are exact only up to rounding.
    assert after == {"SETTLED": (2.0, 2.0, pytest.approx(0.75)), "REJECTED": (1.0, 1.0, pytest.approx(2.0))}


async def test_ledger_results_are_counted_one_each_per_status() -> None:
    async with open_ledger("memory://") as ledger:
        context = StageContext(pool=None, ledger=ledger, redis=None, topology=load_topology())  # type: ignore[arg-type]
        await context.create_accounts([tb.Account(id=n, ledger=1, code=1) for n in (1, 2)])
        transfers = [
            tb.Transfer(id=10 + n, debit_account_id=1, credit_account_id=2, amount=5, ledger=1, code=1)
            for n in range(3)
        ]
        await context.create_transfers(transfers[:1])
        labels = {status: {"operation": "create_transfers", "status": status} for status in ("CREATED", "EXISTS")}
        before = {status: _value("pm_ledger_results_total", label) for status, label in labels.items()}
        results = await context.create_transfers(transfers)  # the first again: EXISTS; the other two CREATED
        assert [r.status.name for r in results] == ["EXISTS", "CREATED", "CREATED"]
        after = {status: _value("pm_ledger_results_total", label) - before[status] for status, label in labels.items()}
        assert after == {"CREATED": 2.0, "EXISTS": 1.0}


@pytest.mark.parametrize(
    ("error", "message", "traceback_logged"),
    [
        (redis.exceptions.ClusterDownError("The cluster is down"), "a dependency is down", False),
        (redis.exceptions.ResponseError("NOGROUP No such key"), "no consumer group", False),
        (ValueError("a bug"), "claiming failed", True),
    ],
    ids=["cluster-down", "nogroup", "bug"],
)
async def test_a_claim_that_meets_an_outage_logs_one_line(
    error: Exception, message: str, traceback_logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    topology = load_topology()
    context = StageContext(pool=None, ledger=None, redis=None, topology=topology)  # type: ignore[arg-type]
    runner = StageRunner(topology.stage("settlement"), context, handler=_handler)
    stop = asyncio.Event()

    async def claim_once() -> int:
        stop.set()  # one round
        raise error

    runner.claim_once = claim_once  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="pm.consumers"):
        await runner.claim_forever(stop)
    (record,) = [r for r in caplog.records if r.name == "pm.consumers"]
    assert message in record.getMessage()
    assert (record.exc_info is not None) == traceback_logged
