"""The history stage's handler on fakes (no database, no Lua): for a batch of final intents it gives back the
refused intents' limit places in one Redis call, then writes every user's history row and marks the batch
`finished` in one statement (a refused refund's give-back would be a second), in that order, and makes no
transition; an open intent in its stream is refused before anything is written."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest

from consumers import history as history_stage
from consumers.context import FixedRules, StageContext
from ledger import open_ledger
from pm.config.topology import load_topology
from pm.domain import history
from pm.domain.cel import ProductionEngine
from pm.domain.intent import ErrorCode, Intent, OperationType, State
from pm.domain.limits import LimitRule, Period, counters_for, released_key
from pm.domain.pricing import RuleSet
from pm.domain.rules import Rules

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ALICE, BOB = 1001, 1002
DAILY = LimitRule(id=7, version=1, operation_type="P2P_TRANSFER", tag=None, period=Period.DAILY,
                  max_amount_minor=100_000, max_count=None, currency="THB")  # fmt: skip


class RecordingRedis(fakeredis.aioredis.FakeRedis):
    """fakeredis without Lua: a script call is recorded (keys and arguments), in `calls` beside the pool's."""

    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.calls = calls

    def register_script(self, script: str) -> Any:
        async def run(keys: list[str], args: list[Any]) -> int:
            self.calls.append(("script", (list(keys), list(args))))
            return 0

        return run


class RecordingPool:
    """The statement the stage runs, recorded; answers as PostgreSQL would on an empty table (no refused
    refund to give back, so no second statement). Its own connection and transaction."""

    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[RecordingPool]:
        yield self

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def fetchrow(self, sql: str, *arguments: Any) -> dict[str, Any]:
        self.calls.append(("sql", (sql, arguments)))
        return {"written": len(arguments[0]), "originals": [], "amounts_minor": []}

    async def execute(self, sql: str, *arguments: Any) -> str:
        raise AssertionError(f"no second statement without a refused refund: {sql}")


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[StageContext, list[tuple[str, Any]]]]:
    calls: list[tuple[str, Any]] = []
    redis = RecordingRedis(calls)
    rules = Rules(generation=1, routes=(), limit_rules=(DAILY,), fees=RuleSet(ProductionEngine(), ()))
    async with open_ledger("memory://") as ledger:
        yield (
            StageContext(
                pool=RecordingPool(calls), ledger=ledger, redis=redis, topology=load_topology(), rules=FixedRules(rules)
            ),
            calls,
        )  # type: ignore[arg-type]
    await redis.aclose()


def final(operation: OperationType, state: State, amount_minor: int, **fields: Any) -> Intent:
    return Intent(
        uuid.uuid4(), state, 6, operation, amount_minor, "THB", fields.pop("sender_id", None),
        fields.pop("recipient_id", None), created_at=NOW, updated_at=NOW, **fields,
    )  # fmt: skip


async def test_a_batch_gives_back_refused_places_then_writes_history_and_finishes_in_one_statement(recorded) -> None:
    context, calls = recorded
    settled = final(OperationType.P2P_TRANSFER, State.SETTLED, 10_000, sender_id=ALICE, recipient_id=BOB,
                    fee_pre_minor=150, fee_post_minor=40)  # fmt: skip
    rejected = final(OperationType.P2P_TRANSFER, State.REJECTED, 5_000, sender_id=ALICE, recipient_id=BOB,
                     error_code=ErrorCode.LIMIT_EXCEEDED)  # fmt: skip
    failed_topup = final(OperationType.QP_TOPUP, State.FAILED, 7_000, recipient_id=BOB, error_code=ErrorCode.EXPIRED)
    batch = [settled, rejected, failed_topup]

    assert await history_stage.handle(batch, context) == []  # no transition: the runner only acknowledges

    assert [kind for kind, _ in calls] == ["script", "sql"]  # places back first, then the one statement
    keys, args = calls[0][1]
    # Only the refused, limited intent (a top-up has no sender: not limited): its released marker and counter.
    assert keys == [released_key(rejected), *(counter.key for counter in counters_for(rejected, (DAILY,)))]
    assert str(rejected.id) in args and str(settled.id) not in args
    sql, arguments = calls[1][1]
    assert "ON CONFLICT (user_id, intent_id) DO NOTHING" in sql and "SET finished = true" in sql
    in_id_order = sorted(batch, key=lambda intent: intent.id)  # one lock order for every consumer
    expected, rows = history.write_arguments(in_id_order)
    assert rows == 4  # settled: a debit and a credit; rejected: the sender's; failed top-up: the recipient's
    assert list(arguments) == [*expected, [i.id for i in in_id_order]]
    assert arguments[1] == sorted(arguments[1])
    # (user, intent) -> amount: PRE fee on the debit, POST fee off the credit; nothing for a refused one
    assert dict(zip(zip(arguments[0], arguments[1], strict=True), arguments[5], strict=True)) == {
        (ALICE, settled.id): 10_150, (BOB, settled.id): 9_960, (ALICE, rejected.id): 0, (BOB, failed_topup.id): 0,
    }


async def test_a_settled_batch_calls_no_release(recorded) -> None:
    context, calls = recorded
    settled = final(OperationType.P2P_TRANSFER, State.SETTLED, 500, sender_id=ALICE, recipient_id=BOB)
    assert await history_stage.handle([settled], context) == []
    assert [kind for kind, _ in calls] == ["sql"]


@pytest.mark.parametrize("state", [State.CREATED, State.AUTHORIZED])
async def test_an_open_intent_is_refused_before_anything_is_written(recorded, state: State) -> None:
    context, calls = recorded
    settled = final(OperationType.P2P_TRANSFER, State.SETTLED, 500, sender_id=ALICE, recipient_id=BOB)
    rejected = final(OperationType.P2P_TRANSFER, State.REJECTED, 500, sender_id=ALICE, recipient_id=BOB)
    open_ = dataclasses.replace(settled, id=uuid.uuid4(), state=state)
    with pytest.raises(history_stage.NotFinalError, match=f"{open_.id} \\({state}\\)"):
        await history_stage.handle([rejected, open_, settled], context)
    assert calls == []
