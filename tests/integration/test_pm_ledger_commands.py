"""`pm ledger demo` and `pm ledger check`, run as the installed command against a real PostgreSQL ledger:
the demo seeds once (a second run moves nothing), the check exits 0 on a clean ledger and 1 when money
rests in transit, naming it; `--allow-pending-transit` tolerates holds in flight but not posted money."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import tigerbeetle as tb

from ledger import accounts, open_ledger

PM = str(Path(sys.executable).parent / "pm")
THB = 764


def pm(*arguments: str, ledger_url: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    environment["PM_LEDGER_URL"] = ledger_url
    return subprocess.run([PM, *arguments], env=environment, capture_output=True, text=True, timeout=120)


async def test_demo_then_check_is_clean_and_idempotent(fresh_database) -> None:
    url = await fresh_database()
    for _ in range(2):
        seeded = await asyncio.to_thread(pm, "ledger", "demo", ledger_url=url)
        assert seeded.returncode == 0, seeded.stderr
    checked = await asyncio.to_thread(pm, "ledger", "check", ledger_url=url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "transit:THB: 0 / 0" in checked.stdout
    async with open_ledger(url) as ledger:
        (user,) = await ledger.lookup_accounts([accounts.user(1001, "THB").id])
    assert user.credits_posted - user.debits_posted == 1_000_000 - 15_000 - 500  # seeded once, not twice


async def test_demo_refuses_a_ledger_with_someone_elses_money(fresh_database) -> None:
    """The demo credits users 1001 and 1002 10,000.00 THB from adjustments with no intent: on a ledger that
    holds accounts it did not make (a wallet's) it refuses, exit 2, and moves nothing."""
    url = await fresh_database()
    wallet_user = accounts.user(4242, "THB")
    async with open_ledger(url) as ledger:
        await ledger.create_accounts([wallet_user.to_tigerbeetle()])
    refused = await asyncio.to_thread(pm, "ledger", "demo", ledger_url=url)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "accounts the demo did not make" in refused.stderr
    async with open_ledger(url) as ledger:
        assert await ledger.lookup_accounts([accounts.user(1001, "THB").id]) == []


async def test_check_fails_on_money_in_transit(fresh_database) -> None:
    url = await fresh_database()
    transit, source = accounts.transit("THB"), accounts.adjustments("THB")
    async with open_ledger(url) as ledger:
        await ledger.create_accounts([transit.to_tigerbeetle(), source.to_tigerbeetle()])
        hold = tb.Transfer(
            id=tb.id(),
            debit_account_id=source.id,
            credit_account_id=transit.id,
            amount=250,
            ledger=THB,
            code=1,
            flags=tb.TransferFlags.PENDING,
            timeout=3600,
        )
        assert (await ledger.create_transfers([hold]))[0].status == tb.CreateTransferStatus.CREATED

    strict = await asyncio.to_thread(pm, "ledger", "check", ledger_url=url)
    assert strict.returncode == 1
    assert "transit:THB holds 250 pending; it must be 0" in strict.stdout
    relaxed = await asyncio.to_thread(pm, "ledger", "check", "--allow-pending-transit", ledger_url=url)
    assert relaxed.returncode == 0, relaxed.stdout

    async with open_ledger(url) as ledger:
        post = tb.Transfer(
            id=tb.id(), pending_id=hold.id, amount=tb.AMOUNT_MAX, flags=tb.TransferFlags.POST_PENDING_TRANSFER
        )
        assert (await ledger.create_transfers([post]))[0].status == tb.CreateTransferStatus.CREATED
    posted = await asyncio.to_thread(pm, "ledger", "check", "--allow-pending-transit", ledger_url=url)
    assert posted.returncode == 1
    assert "transit:THB holds 250 posted; it must be 0" in posted.stdout
