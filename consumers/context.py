"""What a stage handler may use: the database pool, the ledger, Redis, the topology and the routes.

One `StageContext` per process, opened and closed by `open_stage_context` (the composition root of
the consumer processes). Handlers are plain async functions of (intents, context) -> transitions.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis
import tigerbeetle as tb

import channels
from ledger import BATCH_EVENTS_MAX, Ledger, open_ledger
from ledger.postgres import close_pool, keep_session
from pm.config.constants import IDEMPOTENCY_RETENTION_S_DEFAULT
from pm.config.metrics import LEDGER_REQUEST_EVENTS, LEDGER_RESULTS
from pm.config.settings import DEAD_LETTER_STREAM_ENTRIES_MAX_DEFAULT, Settings
from pm.config.topology import Topology, load_topology
from pm.domain.intent import Intent, Transition
from pm.domain.psp import PspTimings
from pm.psp.client import PspClient
from pm.redis.wire import redis_from_url
from pm.store.limit_rules import LimitRuleCache
from pm.store.payment_routes import RouteTable
from pm.store.rule_cache import FeeRuleCache

log = logging.getLogger("pm.consumers")

DATABASE_POOL_SIZE_MAX = 4
DATABASE_COMMAND_TIMEOUT_S = 30.0


class KnownAccounts:
    """Ids of ledger accounts this process saw created or existing. Accounts are never deleted, so a
    stage need not ask the ledger to create them again: one ledger request (and lock) saved per batch
    once the users are known. Bounded: when full it starts over (the ledger answers `exists`)."""

    SIZE_MAX = 200_000

    def __init__(self) -> None:
        self._ids: set[int] = set()

    def unknown(self, account_ids: list[int]) -> list[int]:
        return [account_id for account_id in account_ids if account_id not in self._ids]

    def add(self, account_ids: list[int]) -> None:
        if len(self._ids) + len(account_ids) > self.SIZE_MAX:
            self._ids.clear()
        self._ids.update(account_ids)


@dataclass(slots=True)
class StageContext:
    pool: asyncpg.Pool
    ledger: Ledger
    redis: aioredis.Redis
    topology: Topology
    routes: RouteTable = field(default_factory=RouteTable)
    limit_rules: LimitRuleCache = field(default_factory=LimitRuleCache)
    fee_rules: FeeRuleCache = field(default_factory=FeeRuleCache)
    known_accounts: KnownAccounts = field(default_factory=KnownAccounts)
    psp: PspClient | None = None  # PSP channels' PSPs (their connectors submit, settlement asks)
    psp_status_query_interval_s: float = 10.0  # settlement asks a PSP about an intent at most this often
    # Wall-clock seconds, read against the ledger's hold timestamps (PSP deadlines); tests move it forward.
    clock: Callable[[], float] = time.time
    ledger_request_events_max: int = BATCH_EVENTS_MAX
    # Newest entries a dead-letter stream keeps (PM_DEAD_LETTER_STREAM_ENTRIES_MAX).
    dead_letter_entries_max: int = DEAD_LETTER_STREAM_ENTRIES_MAX_DEFAULT
    # How long the poller keeps idempotency records (PM_IDEMPOTENCY_RETENTION_S).
    idempotency_retention_s: float = IDEMPOTENCY_RETENTION_S_DEFAULT

    async def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]:
        if not transfers:
            return []
        LEDGER_REQUEST_EVENTS.labels("create_transfers").observe(len(transfers))
        results = await self.ledger.create_transfers(transfers)
        for result in results:
            LEDGER_RESULTS.labels("create_transfers", result.status.name).inc()
        return results

    async def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        if not accounts:
            return []
        LEDGER_REQUEST_EVENTS.labels("create_accounts").observe(len(accounts))
        results = await self.ledger.create_accounts(accounts)
        for result in results:
            LEDGER_RESULTS.labels("create_accounts", result.status.name).inc()
        return results


Handler = Callable[[list[Intent], StageContext], Awaitable[list[Transition]]]


@contextlib.asynccontextmanager
async def open_stage_context(
    database_url: str,
    redis_url: str,
    ledger_url: str,
    topology: Topology | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[StageContext]:
    settings = settings or Settings()
    for channel in channels.REGISTRY.values():
        channel.configure(PspTimings.from_settings(settings))
    psp = PspClient(settings)
    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=DATABASE_POOL_SIZE_MAX,
        command_timeout=DATABASE_COMMAND_TIMEOUT_S,
        reset=keep_session,
    )
    redis = redis_from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        async with open_ledger(ledger_url) as ledger:
            yield StageContext(
                pool=pool, ledger=ledger, redis=redis, topology=topology or load_topology(), psp=psp,
                psp_status_query_interval_s=settings.psp_status_query_interval_s,
                dead_letter_entries_max=settings.dead_letter_stream_entries_max,
                idempotency_retention_s=settings.idempotency_retention_s,
            )  # fmt: skip
    finally:
        await psp.close()
        await redis.aclose()
        await close_pool(pool)
