"""Proves that an unreachable TigerBeetle cluster holds no caller past `request_timeout_ms` (issue 12,
fault 3, on the `tigerbeetle` backend). The official client waits forever for a cluster nobody answers
for: without the bound, a stage's batch, a balance read and shutdown's drain would wait with it, and a
stage's batch would never be handed back as a dependency outage. The real client, pointed at a loopback
port nothing listens on, stands for a cluster that went away (no TigerBeetle server is needed)."""

from __future__ import annotations

import asyncio
import time

import pytest
import tigerbeetle as tb

from consumers.runtime import dependency_down
from ledger import LedgerUnavailableError
from ledger.tigerbeetle_client import TigerBeetleLedger
from tests.support.ports import free_port

# Without the bound a call waits forever: this fails the test instead (a TimeoutError, not the outage).
HELD_S_MAX = 10.0


def _transfer() -> tb.Transfer:
    return tb.Transfer(id=7, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1)


def _unreachable_client() -> tb.ClientAsync:
    return tb.ClientAsync(cluster_id=0, replica_addresses=f"127.0.0.1:{free_port()}")


async def test_a_request_nobody_answers_fails_as_a_ledger_outage_after_its_timeout() -> None:
    ledger = TigerBeetleLedger(_unreachable_client(), request_timeout_ms=200)
    try:
        started_s = time.monotonic()
        with pytest.raises(LedgerUnavailableError, match=r"did not answer lookup_accounts within 0\.2 s") as raised:
            await asyncio.wait_for(ledger.lookup_accounts([1]), HELD_S_MAX)
        assert 0.2 <= time.monotonic() - started_s < 2.0
        # What a stage sees: a dependency outage (the batch stays pending, its delivery uncounted).
        assert dependency_down(raised.value) == "ledger"
        with pytest.raises(LedgerUnavailableError, match="did not answer create_transfers"):
            await asyncio.wait_for(ledger.create_transfers([_transfer()]), HELD_S_MAX)
        assert ledger.unanswered == 2  # both left with the client, to land when a replica answers
    finally:
        await ledger.close()
    # Closing the client completes what it held, and nothing is counted as unanswered any more.
    assert ledger.unanswered == 0


async def test_past_the_cap_of_unanswered_requests_nothing_more_is_sent() -> None:
    ledger = TigerBeetleLedger(_unreachable_client(), request_timeout_ms=50, unanswered_max=2)
    try:
        for _ in range(2):
            with pytest.raises(LedgerUnavailableError, match="did not answer"):
                await asyncio.wait_for(ledger.lookup_accounts([1]), HELD_S_MAX)
        started_s = time.monotonic()
        with pytest.raises(LedgerUnavailableError, match="2 TigerBeetle requests are unanswered"):
            await ledger.create_transfers([_transfer()])
        assert time.monotonic() - started_s < 0.04  # refused at once: it did not wait for a timeout
        assert ledger.unanswered == 2
    finally:
        await ledger.close()
    assert ledger.unanswered == 0
