"""What a stage handler may use: the database pool, the ledger, Redis, the topology and the money rules.

One `StageContext` per process, opened and closed by `consumers.bootstrap.open_stage_context` (the
composition root of the consumer processes). Handlers are plain async functions of (intents, context)
-> transitions; a unit test builds a context of fakes (the memory ledger, fakeredis) directly.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import redis.asyncio as aioredis
import tigerbeetle as tb

from ledger import BATCH_EVENTS_MAX, Ledger
from pm.config.constants import (
    BALANCE_SNAPSHOT_INTERVAL_S_DEFAULT,
    CONSUMER_PRUNE_IDLE_S_DEFAULT,
    IDEMPOTENCY_RETENTION_S_DEFAULT,
    LEDGER_CHECK_INTERVAL_S_DEFAULT,
    MINIAPP_CONFIRMATION_TIMEOUT_S_DEFAULT,
    PSP_EVENT_RETENTION_S_DEFAULT,
    WEBHOOK_RETENTION_S_DEFAULT,
)
from pm.config.metrics import LEDGER_REQUEST_EVENTS, LEDGER_REQUEST_SECONDS, LEDGER_RESULTS
from pm.config.settings import DEAD_LETTER_STREAM_ENTRIES_MAX_DEFAULT
from pm.config.topology import Topology
from pm.domain.intent import Intent, Transition
from pm.domain.rules import Rules
from pm.psp.client import PspClient
from pm.redis.limit_counters import NO_WAIT, Durability
from pm.store.rules import RulesCache

log = logging.getLogger("pm.consumers")


class RulesSource(Protocol):
    """Where a handler gets the rules: the process's RulesCache, or fixed ones in a unit test."""

    async def current(self, pool: Any) -> Rules: ...


@dataclass(frozen=True, slots=True)
class FixedRules:
    """Rules that never change, for unit tests of the handlers (no database)."""

    rules: Rules

    async def current(self, pool: Any) -> Rules:
        return self.rules


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
    # The money rules: `await context.rules.current(context.pool)` is one snapshot (pm.domain.rules.Rules);
    # a unit test gives a `FixedRules` instead of the cache that reads PostgreSQL.
    rules: RulesSource = field(default_factory=RulesCache)
    known_accounts: KnownAccounts = field(default_factory=KnownAccounts)
    psp: PspClient | None = None  # PSP channels' PSPs (their connectors submit, settlement asks)
    psp_status_query_interval_s: float = 10.0  # settlement asks a PSP about an intent at most this often
    # Wall-clock seconds, read against the ledger's hold timestamps (PSP deadlines); tests move it forward.
    clock: Callable[[], float] = time.time
    ledger_request_events_max: int = BATCH_EVENTS_MAX
    # Replicas the limit counters' writes wait for (PM_REDIS_LIMITS_WAIT_REPLICAS).
    limits_durability: Durability = NO_WAIT
    # Newest entries a dead-letter stream keeps (PM_DEAD_LETTER_STREAM_ENTRIES_MAX).
    dead_letter_entries_max: int = DEAD_LETTER_STREAM_ENTRIES_MAX_DEFAULT
    # How long the poller keeps idempotency records (PM_IDEMPOTENCY_RETENTION_S).
    idempotency_retention_s: float = IDEMPOTENCY_RETENTION_S_DEFAULT
    # How long the poller keeps delivered outbox rows and PSP callback events (PM_WEBHOOK_RETENTION_S,
    # PM_PSP_EVENT_RETENTION_S).
    webhook_retention_s: float = WEBHOOK_RETENTION_S_DEFAULT
    psp_event_retention_s: float = PSP_EVENT_RETENTION_S_DEFAULT
    # How long a mini-app charge waits for its user before the poller expires it (PM_MINIAPP_CONFIRMATION_TIMEOUT_S).
    miniapp_confirmation_timeout_s: int = MINIAPP_CONFIRMATION_TIMEOUT_S_DEFAULT
    # How often the poller checks the ledger for the metrics (PM_LEDGER_CHECK_INTERVAL_S; 0: never).
    ledger_check_interval_s: float = LEDGER_CHECK_INTERVAL_S_DEFAULT
    # How often the poller snapshots balances into PostgreSQL (PM_BALANCE_SNAPSHOT_INTERVAL_S; 0: never).
    balance_snapshot_interval_s: float = BALANCE_SNAPSHOT_INTERVAL_S_DEFAULT
    # The poller deletes consumers idle this long with nothing pending (PM_STREAM_CONSUMER_PRUNE_IDLE_S).
    consumer_prune_idle_s: float = CONSUMER_PRUNE_IDLE_S_DEFAULT
    # On SIGTERM, how long the batch in flight gets to finish (PM_SHUTDOWN_GRACE_S; consumers/main.py).
    shutdown_grace_s: float = 10.0

    async def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]:
        if not transfers:
            return []
        LEDGER_REQUEST_EVENTS.labels("create_transfers").observe(len(transfers))
        started_s = time.perf_counter()
        results = await self.ledger.create_transfers(transfers)
        LEDGER_REQUEST_SECONDS.labels("create_transfers").observe(time.perf_counter() - started_s)
        for status, count in Counter(result.status.name for result in results).items():  # a labels() per status
            LEDGER_RESULTS.labels("create_transfers", status).inc(count)
        return results

    async def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        if not accounts:
            return []
        LEDGER_REQUEST_EVENTS.labels("create_accounts").observe(len(accounts))
        started_s = time.perf_counter()
        results = await self.ledger.create_accounts(accounts)
        LEDGER_REQUEST_SECONDS.labels("create_accounts").observe(time.perf_counter() - started_s)
        for status, count in Counter(result.status.name for result in results).items():  # a labels() per status
            LEDGER_RESULTS.labels("create_accounts", status).inc(count)
        return results

    async def lookup_transfers(self, transfer_ids: list[int]) -> list[tb.Transfer]:
        if not transfer_ids:
            return []
        LEDGER_REQUEST_EVENTS.labels("lookup_transfers").observe(len(transfer_ids))
        started_s = time.perf_counter()
        found = await self.ledger.lookup_transfers(transfer_ids)
        LEDGER_REQUEST_SECONDS.labels("lookup_transfers").observe(time.perf_counter() - started_s)
        return found


Handler = Callable[[list[Intent], StageContext], Awaitable[list[Transition]]]
