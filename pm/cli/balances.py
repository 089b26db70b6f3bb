"""`pm balances snapshot`: the balance snapshot the status poller keeps in PostgreSQL
(pm.account_balance_snapshot, consumers/balance_snapshot.py), a page at a time by account id, without
touching the ledger; `--take` first takes one of the whole ledger now (the ledger the settings name, as
for `pm ledger check`). A bad --limit or --after exits 2 with nothing read or written.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pm.cli.common import EXIT_OK, CommandError, connected, database
from pm.cli.ledger import opened_ledger
from pm.config.constants import BALANCES_PAGE_ROWS_DEFAULT
from pm.config.settings import Settings
from pm.store.balance_snapshots import ACCOUNT_ID_MAX, ACCOUNT_KINDS, SNAPSHOT_PAGE_ROWS_MAX

LIMIT_MAX = SNAPSHOT_PAGE_ROWS_MAX - 1  # a page reads one row more to know whether another follows
TAKE_PAGES_MAX = 100_000  # 409 million accounts: `--take` reads the whole ledger, within this bound


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    balances = commands.add_parser("balances", help="the balance snapshot in PostgreSQL").add_subparsers(
        required=True, metavar="COMMAND"
    )
    snapshot = balances.add_parser(
        "snapshot", help="every ledger account's balances as last snapshot (by account id), without the ledger"
    )
    snapshot.add_argument("--kind", choices=ACCOUNT_KINDS, help="only accounts of this kind")
    snapshot.add_argument(
        "--limit", type=int, default=BALANCES_PAGE_ROWS_DEFAULT, metavar="N",
        help=f"most accounts listed (default {BALANCES_PAGE_ROWS_DEFAULT}, at most {LIMIT_MAX:,})",
    )  # fmt: skip
    snapshot.add_argument("--after", type=int, default=0, metavar="ACCOUNT_ID", help="list the accounts after this id")
    snapshot.add_argument("--take", action="store_true", help="take a snapshot of the whole ledger first")
    snapshot.add_argument("--json", action="store_true", help="print JSON")
    snapshot.set_defaults(command=_snapshot)


async def _snapshot(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.store.balance_snapshots import snapshot_page

    if not 0 < arguments.limit <= LIMIT_MAX:
        raise CommandError(f"--limit must be from 1 to {LIMIT_MAX:,}")
    if not 0 <= arguments.after <= ACCOUNT_ID_MAX:
        raise CommandError("--after must be an account id (an unsigned 128-bit integer)")
    taken: dict[str, Any] | None = None
    async with database(settings) as database_url, connected(database_url) as connection:
        if arguments.take:
            taken = await _take(connection, settings.effective_ledger_url(database_url))
        rows = await snapshot_page(connection, arguments.kind, arguments.after, arguments.limit + 1)
    items = rows[: arguments.limit]
    next_after = items[-1]["account_id"] if len(rows) > arguments.limit else None
    if arguments.json:
        print(json.dumps({"taken": taken, "items": items, "next_after": next_after}, indent=2))
        return EXIT_OK
    if taken is not None:
        print(f"took a snapshot of {taken['accounts']} account(s) in {taken['pages']} page(s)")
    _print_rows(items)
    if next_after is not None:
        print(f"more: --after {next_after}")
    return EXIT_OK


async def _take(connection: Any, ledger_url: str) -> dict[str, Any]:
    from consumers.balance_snapshot import take_snapshot

    async with opened_ledger(ledger_url) as ledger:
        run = await take_snapshot(ledger, connection, pages_max=TAKE_PAGES_MAX)
    if not run.complete:
        raise CommandError(f"the ledger has more than {TAKE_PAGES_MAX:,} pages of accounts; the snapshot stopped there")
    return {"accounts": run.accounts, "pages": run.pages, "named": run.named}


def _print_rows(items: list[dict[str, Any]]) -> None:
    if not items:
        print("(no accounts in the snapshot: the status poller takes one every PM_BALANCE_SNAPSHOT_INTERVAL_S,"
              " or run `pm balances snapshot --take`)")  # fmt: skip
        return
    print(f"{'account':<40} {'kind':<12} {'currency':<8} {'posted':>16} {'pending':>14} {'available':>16}  taken at")
    for item in items:
        label = item["name"] or item["account_id"]
        print(
            f"{label:<40} {item['kind']:<12} {item['currency'] or '?':<8} {item['posted_minor']:>16}"
            f" {item['pending_minor']:>14} {item['available_minor']:>16}  {item['taken_at']}"
        )
