"""A fee rule saved by one process is priced by another process's rule cache within a second (the poll
interval is half of it), without a restart or any message between them: only pm.rule_generation."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg

from pm.domain.pricing import FeeKind
from pm.store import fee_rules
from pm.store.audit import Actor
from pm.store.fee_rules import FeeRuleFields
from pm.store.migrate import migrate

RELOAD_BOUND_S = 1.0
# The bound is 0.5 s plus one query by construction (tests/unit/test_rules_cache.py proves it with a fake
# clock); here two processes share two cores with whatever else runs, so scheduling gets a second more.
BUSY_MACHINE_SLACK_S = 1.0
LINE_TIMEOUT_S = 30.0

# The other process: prices one request every 20 ms with its own cache and prints each new fee with the
# wall-clock time it first saw it; it stops when it sees the expected fee or after 30 s.
CHILD = """
import asyncio, json, sys, time
from datetime import UTC, datetime
import asyncpg
from pm.domain.pricing import PricingRequest
from pm.store.rules import RulesCache

async def main(database_url, expected_fee):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    cache, last = RulesCache(), None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        request = PricingRequest("P2P_TRANSFER", "INTERNAL_P2P", 10_000, "THB", (), 1, 2, datetime.now(UTC))
        fee = (await cache.current(pool)).fees.price(request).fee_pre_minor
        if fee != last:
            print(json.dumps({"fee": fee, "seen_at": time.time()}), flush=True)
            last = fee
        if fee == expected_fee:
            break
        await asyncio.sleep(0.02)
    await pool.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def _line(process: asyncio.subprocess.Process) -> dict:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), LINE_TIMEOUT_S)
    assert line, "the other process ended without answering"
    return json.loads(line)


async def test_a_saved_rule_reaches_another_process_within_a_second(fresh_database) -> None:
    database_url = await fresh_database()
    await migrate(database_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, database_url, "77", stdout=asyncio.subprocess.PIPE
    )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        assert (await _line(process))["fee"] == 0  # its cache is loaded (no rules yet)
        await fee_rules.create_rule(
            pool,
            Actor(api_key_id="test", operator_id=None),
            FeeRuleFields("flat", None, None, "true", "77", FeeKind.PRE, priority=1, currency="THB"),
        )
        committed_at = time.time()
        seen = await _line(process)
        assert seen["fee"] == 77
        delay_s = seen["seen_at"] - committed_at
        assert delay_s < RELOAD_BOUND_S + BUSY_MACHINE_SLACK_S, f"seen {delay_s:.3f} s after the commit"
        assert await asyncio.wait_for(process.wait(), LINE_TIMEOUT_S) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await pool.close()
