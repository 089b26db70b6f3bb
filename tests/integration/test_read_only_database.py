"""A PostgreSQL that takes no writes is an outage, not a poisoned batch. A hot standby after a failover, or
a server put in read-only mode for maintenance (`default_transaction_read_only`), answers every write
with 25006 (ReadOnlySQLTransactionError). Taken for a bug, a stage counted each batch's delivery and
dead-lettered in-flight intents once `max_deliveries` ran out, and the gateway answered 500.

Now:
- the error is an outage, for the gateway (503), the stages (an uncounted delivery) and the `postgres`
  ledger (LedgerUnavailableError);
- every pool connects only to a server that takes writes (`target_session_attrs=read-write` unless the
  URL says otherwise), so with several hosts in the URL a new connection finds the primary, and with none
  writable the connect fails as an outage (TargetServerAttributeNotMatched).

All of it runs against the real server: the database is made read-only with `ALTER DATABASE ... SET
default_transaction_read_only`, and its backends are terminated so that new sessions take the setting."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from typing import Any

import asyncpg
import pytest

from consumers.runtime import dependency_down
from ledger import LedgerUnavailableError
from ledger.postgres import PostgresLedger, _unavailable
from pm.domain.intent import State
from pm.store.pool import close_pool, database_unavailable, open_pool
from tests.support.gateway_pipeline import gateway_on_pipeline
from tests.support.outage import (
    assert_balances_after,
    assert_converged,
    funded_plan,
    outages_counted,
    post_until_accepted,
    terminate_every_backend,
    wait_drained,
)
from tests.support.pipeline import isolated_topology

INTENTS = 200
CALLERS = 8
USERS = 10
FUNDS_MINOR = 10_000_000
READ_ONLY_AFTER_ACCEPTED = 50
READ_ONLY_S = 2.0
ANY_SERVER = "target_session_attrs=any"


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


def database_name(url: str) -> str:
    return url.split("?")[0].rsplit("/", 1)[1]


async def set_read_only(admin: asyncpg.Connection, name: str, read_only: bool) -> None:
    """New sessions of the database take no writes (or take them again); sessions open now keep theirs, so
    the caller terminates them."""
    if read_only:
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    else:
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


async def test_the_real_servers_refusals_of_writes_are_outages(fresh_database) -> None:
    url = await fresh_database()
    admin = await asyncpg.connect(url, timeout=10)
    try:
        await admin.execute("CREATE TABLE t (n int)")
        await set_read_only(admin, database_name(url), True)
        # A session on a read-only server (here one that asked not to care which): every write is 25006.
        pool = await open_pool(with_query(url, ANY_SERVER), connections_max=1)
        try:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError) as refused:
                await pool.execute("INSERT INTO t VALUES (1)")
        finally:
            await close_pool(pool)
        assert database_unavailable(refused.value) and _unavailable(refused.value)
        assert dependency_down(refused.value) == "database"
        # PM's own pools, and the ledger's, do not connect to it at all: an outage too.
        with pytest.raises(asyncpg.exceptions.TargetServerAttributeNotMatched) as not_writable:
            await open_pool(url, connections_max=1)
        assert database_unavailable(not_writable.value) and dependency_down(not_writable.value) == "database"
        with pytest.raises(LedgerUnavailableError):
            await PostgresLedger.connect(url)
        await set_read_only(admin, database_name(url), False)
        pool = await open_pool(url, connections_max=1)
        try:
            assert await pool.execute("INSERT INTO t VALUES (2)") == "INSERT 0 1"
        finally:
            await close_pool(pool)
    finally:
        await admin.close(timeout=10)


@pytest.mark.parametrize("query", ["", ANY_SERVER], ids=["connect-refused", "writes-refused"])
async def test_a_read_only_database_costs_retries_and_nothing_else(fresh_database, redis_url, query: str) -> None:
    """While intents go through the real gateway and stages (`max_deliveries: 1`: a counted delivery is
    dead-lettered at its first retry), the database takes no writes for two seconds: new connections are
    refused (PM's default) or every write is (a URL that accepts any server). Every intent still settles
    once, with exact balances, no dead letter and a clean ledger; callers hear 202, 503 or 409 only."""

    async def database() -> str:
        return with_query(await fresh_database(), query)

    topology = isolated_topology(claim_idle_ms=10_000, max_deliveries=1)
    async with gateway_on_pipeline(database, redis_url, topology) as world:
        pipeline = world.pipeline
        senders, recipients, plan = await funded_plan(pipeline, USERS, INTENTS, FUNDS_MINOR)
        key = await world.key("intents:write,intents:read", "P2P_TRANSFER")
        outages_before = outages_counted("database")
        answers: collections.Counter[tuple[int, str]] = collections.Counter()
        accepted: list[uuid.UUID] = []
        queue = iter(plan)
        deadline_s = time.monotonic() + 60
        enough_accepted = asyncio.Event()

        async def caller() -> None:
            for sender, recipient, amount in queue:
                body: dict[str, Any] = {"operation_type": "P2P_TRANSFER", "amount_minor": amount,
                                        "currency": "THB", "recipient_id": recipient}  # fmt: skip
                accepted.append(await post_until_accepted(world, key, body, sender, answers, deadline_s))
                if len(accepted) >= READ_ONLY_AFTER_ACCEPTED:
                    enough_accepted.set()

        admin = await asyncpg.connect(pipeline.database_url, timeout=10)
        try:
            callers = asyncio.gather(*(caller() for _ in range(CALLERS)))
            await asyncio.wait_for(enough_accepted.wait(), 60)
            name = database_name(pipeline.database_url)
            await set_read_only(admin, name, True)
            assert await terminate_every_backend(admin) > 0
            await asyncio.sleep(READ_ONLY_S)
            await set_read_only(admin, name, False)
            await terminate_every_backend(admin)
            await callers
        finally:
            await set_read_only(admin, database_name(pipeline.database_url), False)
            await admin.close(timeout=10)

        finished = await pipeline.wait_finished(accepted, timeout_s=60)
        assert len(set(accepted)) == INTENTS and await world.writes_by(key) == (INTENTS, INTENTS)
        assert {intent.state for intent in finished.values()} == {State.SETTLED}
        await assert_balances_after(pipeline.balance, plan, senders, recipients, FUNDS_MINOR)
        await wait_drained(world)
        await assert_converged(world, accepted)
        assert outages_counted("database") > outages_before, answers
        assert set(answers) <= {(202, ""), (503, "UNAVAILABLE"), (409, "REQUEST_IN_FLIGHT")}, answers
