"""The balance snapshot (DESIGN.md §1): every ledger account's posted, pending and available balance
written to `pm.account_balance_snapshot` (pm/store/balance_snapshots.py), for reporting without touching
the ledger. The status poller takes one every PM_BALANCE_SNAPSHOT_INTERVAL_S; `pm balances snapshot
--take` takes one now.

Per page of BALANCE_SNAPSHOT_PAGE_ACCOUNTS accounts (oldest first, by ledger timestamp, as `pm ledger check`
pages): the ledger's newest transfer timestamp (what the page's balances include at least), the page
(`query_accounts`), the names of the page's accounts not yet named, and one upsert statement. No
transaction spans two statements and the only table written is the snapshot's own, so a snapshot never
holds a lock the pipeline waits for; its reads of the ledger are the reads any balance request makes.

Names: an account id is derived from its name and cannot be reversed. The accounts every currency has
(transit, fees, adjustments, each channel's PSP account) are named from a table computed once; a user's
or a merchant's from the intent of its newest transfer (every transfer carries its intent's id in
`user_data_128`; the intent's channel lists the accounts it touches). A name once stored is kept.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
import tigerbeetle as tb

import channels
from consumers.runtime import raise_if_cancelling
from ledger.accounts import (
    CURRENCY_LEDGER,
    AccountKind,
    NamedAccount,
    adjustments,
    fees,
    psp,
    transit,
)
from ledger.open import Ledger
from ledger.validate import BATCH_EVENTS_MAX
from pm.config import metrics
from pm.config.constants import (
    BALANCE_SNAPSHOT_NAME_LOOKUPS_CONCURRENT_MAX,
    BALANCE_SNAPSHOT_NAME_LOOKUPS_PER_RUN_MAX,
    BALANCE_SNAPSHOT_PAGE_ACCOUNTS,
    BALANCE_SNAPSHOT_PAGES_MAX,
)
from pm.domain.intent import Intent
from pm.store.balance_snapshots import ACCOUNT_KINDS, SnapshotRow, StoredAccount, stored_accounts, write_page
from pm.store.intents import load_intents

log = logging.getLogger("pm.balance_snapshot")

UNKNOWN_KIND = "unknown"
assert {kind.name.lower() for kind in AccountKind} | {UNKNOWN_KIND} == set(ACCOUNT_KINDS), ACCOUNT_KINDS
_CURRENCY_OF_LEDGER = {number: code for code, number in CURRENCY_LEDGER.items()}


@dataclass(slots=True)
class SnapshotRun:
    """What one run wrote. `resume_timestamp_min` 0: it reached the ledger's last account; else it stopped
    at its page bound and the next run goes on from this ledger timestamp."""

    accounts: int = 0
    pages: int = 0
    name_lookups: int = 0  # accounts whose newest transfer was read for a name (at most name_lookups_max)
    named: int = 0  # of those, the accounts it named (through the transfer's intent)
    resume_timestamp_min: int = 0

    @property
    def complete(self) -> bool:
        return self.resume_timestamp_min == 0


def kind_name(code: int) -> str:
    """The snapshot's `kind` of a ledger account code: its AccountKind, lower case, or `unknown`."""
    try:
        return AccountKind(code).name.lower()
    except ValueError:
        return UNKNOWN_KIND


@functools.cache
def fixed_accounts() -> dict[int, NamedAccount]:
    """The accounts named without an intent: every currency's transit, fees and adjustments accounts and
    each channel's PSP account (only PSP channels ever use theirs)."""
    named = [
        account
        for currency in CURRENCY_LEDGER
        for account in (transit(currency), fees(currency), adjustments(currency),
                        *(psp(channel, currency) for channel in channels.REGISTRY))
    ]  # fmt: skip
    return {account.id: account for account in named}


async def take_snapshot(
    ledger: Ledger,
    pool: asyncpg.Pool | asyncpg.Connection,
    *,
    timestamp_min: int = 0,
    page_accounts: int = BALANCE_SNAPSHOT_PAGE_ACCOUNTS,
    pages_max: int = BALANCE_SNAPSHOT_PAGES_MAX,
    name_lookups_max: int = BALANCE_SNAPSHOT_NAME_LOOKUPS_PER_RUN_MAX,
) -> SnapshotRun:
    """Snapshot the accounts from ledger timestamp `timestamp_min` on (0: all), at most `pages_max` pages
    of `page_accounts`; each page its own ledger query and its own upsert statement."""
    assert 0 < page_accounts <= BATCH_EVENTS_MAX, page_accounts
    assert pages_max > 0 and name_lookups_max >= 0
    run = SnapshotRun()
    for _ in range(pages_max):
        # Read before the page: every transfer up to it is in the balances the page then shows.
        fence_timestamp = await newest_transfer_timestamp(ledger)
        page = await ledger.query_accounts(_accounts_from(timestamp_min, page_accounts))
        stored = await stored_accounts(pool, [account.id for account in page])
        names, looked_up = await _names(ledger, pool, page, stored, name_lookups_max - run.name_lookups)
        await write_page(pool, [_row(account, names.get(account.id), fence_timestamp) for account in page])
        run.accounts += len(page)
        run.pages += 1
        run.name_lookups += len(looked_up)
        run.named += sum(1 for account_id in looked_up if account_id in names)
        if len(page) < page_accounts:
            return run
        timestamp_min = page[-1].timestamp + 1
    run.resume_timestamp_min = timestamp_min
    return run


async def newest_transfer_timestamp(ledger: Ledger) -> int:
    """The cluster time of the ledger's newest transfer (0: none yet)."""
    newest = await ledger.query_transfers(
        tb.QueryFilter(
            user_data_128=0, user_data_64=0, user_data_32=0, ledger=0, code=0, timestamp_min=0, timestamp_max=0,
            limit=1, flags=tb.QueryFilterFlags.REVERSED,
        )
    )  # fmt: skip
    return newest[0].timestamp if newest else 0


def _accounts_from(timestamp_min: int, limit: int) -> tb.QueryFilter:
    return tb.QueryFilter(
        user_data_128=0, user_data_64=0, user_data_32=0, ledger=0, code=0, timestamp_min=timestamp_min,
        timestamp_max=0, limit=limit, flags=tb.QueryFilterFlags.NONE,
    )  # fmt: skip


def _counters(account: tb.Account) -> tuple[int, int, int, int]:
    return account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted


def _row(account: tb.Account, named: NamedAccount | None, fence_timestamp: int) -> SnapshotRow:
    kind = kind_name(account.code)
    owner_id = _owner_id(named) if named is not None else None
    return SnapshotRow(
        account_id=account.id, ledger=account.ledger, currency=_CURRENCY_OF_LEDGER.get(account.ledger),
        code=account.code, kind=kind, name=named.name if named is not None else None,
        user_id=owner_id if kind == "user" else None, merchant_id=owner_id if kind == "merchant" else None,
        debits_pending=account.debits_pending, debits_posted=account.debits_posted,
        credits_pending=account.credits_pending, credits_posted=account.credits_posted,
        # An account created after the newest transfer was read is, at its creation, all its balances say.
        ledger_timestamp=max(fence_timestamp, account.timestamp),
    )  # fmt: skip


def _owner_id(named: NamedAccount) -> int | None:
    """The user of `user:{id}:{currency}`, the merchant of `merchant:{id}:{currency}`; else None."""
    if named.kind not in (AccountKind.USER, AccountKind.MERCHANT):
        return None
    _, owner, _ = named.name.split(":")
    return int(owner)


def _needs_name(account: tb.Account, stored: StoredAccount | None) -> bool:
    """Not named yet, and moved: an account that never moved has no transfer to name it from."""
    if stored is not None and stored.name is not None:
        return False
    return any(_counters(account))


async def _names(
    ledger: Ledger,
    pool: asyncpg.Pool | asyncpg.Connection,
    page: list[tb.Account],
    stored: dict[int, StoredAccount],
    lookups_max: int,
) -> tuple[dict[int, NamedAccount], list[int]]:
    """Names of the page's accounts that are fixed, or not stored yet and found from an intent (at most
    `lookups_max` lookups), and the accounts looked up; an account already named in its row is left out
    (the row keeps its name)."""
    fixed = fixed_accounts()
    names = {account.id: fixed[account.id] for account in page if account.id in fixed}
    wanted = [a for a in page if a.id not in fixed and _needs_name(a, stored.get(a.id))][: max(lookups_max, 0)]
    if not wanted:
        return names, []
    intent_ids = await _newest_intent_ids(ledger, [account.id for account in wanted])
    touched = _accounts_of_intents(await load_intents(pool, sorted(set(intent_ids.values()))))
    for account in wanted:
        found = touched.get(account.id)
        if found is not None:
            names[account.id] = found
    return names, [account.id for account in wanted]


async def _newest_intent_ids(ledger: Ledger, account_ids: list[int]) -> dict[int, uuid.UUID]:
    """The intent id (`user_data_128`) of each account's newest transfer, for those that have one."""
    semaphore = asyncio.Semaphore(BALANCE_SNAPSHOT_NAME_LOOKUPS_CONCURRENT_MAX)

    async def newest(account_id: int) -> list[tb.Transfer]:
        async with semaphore:
            return await ledger.get_account_transfers(
                tb.AccountFilter(
                    account_id=account_id, user_data_128=0, user_data_64=0, user_data_32=0, code=0,
                    timestamp_min=0, timestamp_max=0, limit=1,
                    flags=tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS | tb.AccountFilterFlags.REVERSED,
                )
            )  # fmt: skip

    found = await asyncio.gather(*(newest(account_id) for account_id in account_ids))
    return {
        account_id: uuid.UUID(int=transfers[0].user_data_128)
        for account_id, transfers in zip(account_ids, found, strict=True)
        if transfers and transfers[0].user_data_128
    }


def _accounts_of_intents(intents: Iterable[Intent]) -> dict[int, NamedAccount]:
    touched: dict[int, NamedAccount] = {}
    for intent in intents:
        channel = channels.channel_named(intent.channel)
        if channel is not None:
            touched.update((account.id, account) for account in channel.accounts(intent))
    return touched


@dataclass(slots=True)
class Snapshots:
    """The poller's snapshots: where the next run starts (a ledger larger than one run's pages is finished
    by the next ones) and the accounts the pass in progress wrote."""

    timestamp_min: int = 0
    pass_accounts: int = 0


async def snapshot_once(
    ledger: Ledger,
    pool: asyncpg.Pool | asyncpg.Connection,
    snapshots: Snapshots,
    pages_max: int = BALANCE_SNAPSHOT_PAGES_MAX,
) -> SnapshotRun | None:
    """One run for the status poller, with its metrics; None (counted, logged) when it cannot complete."""
    started_s = time.monotonic()
    try:
        run = await take_snapshot(ledger, pool, timestamp_min=snapshots.timestamp_min, pages_max=pages_max)
    except Exception:
        raise_if_cancelling()
        metrics.BALANCE_SNAPSHOT_FAILURES.inc()
        log.exception("balance snapshot could not complete; the next run starts its page again")
        return None
    snapshots.pass_accounts += run.accounts
    snapshots.timestamp_min = run.resume_timestamp_min
    if run.complete:
        metrics.BALANCE_SNAPSHOT_ACCOUNTS.set(snapshots.pass_accounts)
        metrics.BALANCE_SNAPSHOT_TIMESTAMP_SECONDS.set(time.time())
        snapshots.pass_accounts = 0
    log.info(
        "balance snapshot",
        extra={"accounts": run.accounts, "pages": run.pages, "named": run.named, "complete": run.complete,
               "seconds": round(time.monotonic() - started_s, 3)},
    )  # fmt: skip
    return run
