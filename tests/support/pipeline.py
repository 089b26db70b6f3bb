"""A pipeline on real servers for one test: a fresh migrated database (which also holds the `postgres`
ledger), streams with names of its own in the session's Valkey, and a way to run the stages in-process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import tigerbeetle as tb

from consumers import outbox_feed
from consumers.bootstrap import open_stage_context
from consumers.context import StageContext
from consumers.main import running_stages
from consumers.outbox import run_outbox
from ledger import accounts
from ledger.check import CheckReport, run_check
from pm.config.topology import Topology, parse_topology, renamed_document
from pm.domain.intent import Intent, OperationType, State
from pm.redis import streams
from pm.store import intents
from pm.store.migrate import migrate

FINISHED = ("SETTLED", "REJECTED", "FAILED")


def isolated_topology(**stage_overrides: Any) -> Topology:
    """streams.yaml with every stream and group renamed for this test, plus overrides for all stages."""
    return parse_topology(renamed_document(f"t{uuid.uuid4().hex[:10]}:", **stage_overrides))


@dataclasses.dataclass
class Pipeline:
    context: StageContext
    redis_url: str
    database_url: str

    @property
    def topology(self) -> Topology:
        return self.context.topology

    async def submit(
        self,
        operation_type: OperationType,
        amount_minor: int,
        sender_id: int | None,
        recipient_id: int | None,
        publish: bool = True,
        currency: str = "THB",
        destination_ref: str | None = None,
    ) -> Intent:
        """Create an intent as the gateway does (row, then the first stream's entry)."""
        outcome = await intents.create_intent(
            self.context.pool,
            api_key_id="test",
            idempotency_key=uuid.uuid4().hex,
            request_hash=b"test",
            operation_type=operation_type,
            amount_minor=amount_minor,
            currency=currency,
            sender_id=sender_id,
            recipient_id=recipient_id,
            operator_id=None,
            tags=[],
            destination_ref=destination_ref,
        )
        assert outcome.created is not None
        if publish:
            await self.context.redis.xadd(self.topology.first_stage.stream, streams.entry_fields(outcome.created))
        return outcome.created

    async def fund(self, user_id: int, amount_minor: int, currency: str = "THB") -> Intent:
        return await self.submit(OperationType.ADMIN_ADJUSTMENT, amount_minor, None, user_id, currency=currency)

    async def wait_finished(self, ids: list[uuid.UUID], timeout_s: float = 30.0) -> dict[uuid.UUID, Intent]:
        """Wait until every intent is final, finished and fed (status published, history written)."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await self.context.pool.fetch(
                "SELECT id FROM pm.intent WHERE id = ANY($1::uuid[]) AND state = ANY($2::text[]) AND finished",
                ids,
                list(FINISHED),
            )
            if len(rows) == len(set(ids)) and len(await outbox_feed.delivered(self.context.pool, ids)) == len(set(ids)):
                return {i.id: i for i in await intents.load_intents(self.context.pool, ids)}
            if time.monotonic() > deadline:
                states = await self.context.pool.fetch(
                    "SELECT state, count(*) FROM pm.intent WHERE id = ANY($1::uuid[]) GROUP BY state", ids
                )
                raise AssertionError(f"intents not finished after {timeout_s} s: {[tuple(r) for r in states]}")
            await asyncio.sleep(0.05)

    async def balance(self, user_id: int, currency: str = "THB") -> tuple[int, int]:
        """(posted balance, pending debits) of a user's account in `currency` (THB by default)."""
        found = await self.context.ledger.lookup_accounts([accounts.user(user_id, currency).id])
        if not found:
            return 0, 0
        account = found[0]
        return account.credits_posted - account.debits_posted, account.debits_pending

    async def check(self) -> CheckReport:
        return await run_check(self.context.ledger)

    async def history(self, user_id: int) -> list[dict[str, Any]]:
        rows = await self.context.pool.fetch(
            "SELECT * FROM pm.history WHERE user_id = $1 ORDER BY created_at, intent_id", user_id
        )
        return [dict(row) for row in rows]

    async def states(self, intent_id: uuid.UUID) -> list[str]:
        rows = await self.context.pool.fetch(
            "SELECT state FROM pm.intent_event WHERE intent_id = $1 ORDER BY version", intent_id
        )
        return [row["state"] for row in rows]

    @contextlib.asynccontextmanager
    async def stages(
        self, names: list[str] | None = None, with_poller: bool = False, with_outbox: bool = True
    ) -> AsyncIterator[None]:
        """Run these stages (all by default) in-process, and the outbox worker (statuses, history)."""
        async with contextlib.AsyncExitStack() as stack:
            if with_outbox:
                await stack.enter_async_context(running_outbox(self.context))
            await stack.enter_async_context(
                running_stages(self.context, self.redis_url, names or list(self.topology.stages), with_poller)
            )
            yield


@contextlib.asynccontextmanager
async def running_outbox(context: StageContext) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_outbox(context.pool, context.redis, context.topology, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def open_pipeline(
    fresh_database: Any, redis_url: str, topology: Topology, ledger_url: str | None = None
) -> AsyncIterator[Pipeline]:
    """`ledger_url`: the `postgres` ledger in a database of its own (e.g. on another server); by default
    it lives in the pipeline's database."""
    database_url = await fresh_database()
    await migrate(database_url)
    async with open_stage_context(database_url, redis_url, ledger_url or database_url) as context:
        context.topology = topology
        await streams.ensure_groups(context.redis, topology)
        yield Pipeline(context, redis_url, database_url)


def ledger_transfers_of(intent: Intent) -> list[int]:
    return [accounts.transfer_id(intent.id, leg) for leg in ("hold", "post", "recipient", "fees", "void")]


async def transfers_in_ledger(pipeline: Pipeline, intent: Intent) -> list[tb.Transfer]:
    return await pipeline.context.ledger.lookup_transfers(ledger_transfers_of(intent))


__all__ = ["FINISHED", "Pipeline", "State", "isolated_topology", "open_pipeline", "transfers_in_ledger"]
