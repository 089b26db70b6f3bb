"""`pm reconcile`: every intent and every user's history checked against the ledger (pm/cli/reconciliation.py
says what is checked). Prints each mismatch as it is found, one line each; exits 1 on any, 0 when none.

The database is the configured (or embedded) one, the ledger the one the settings name
(`Settings.effective_ledger_url`), as for `pm ledger check`.
"""

from __future__ import annotations

import argparse
import json

from pm.cli.common import EXIT_OK, EXIT_PROBLEM_FOUND, connected, database
from pm.cli.ledger import opened_ledger
from pm.config.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        help="check every final intent and every user's history against the ledger (1: mismatches found)",
    )
    reconcile.add_argument("--json", action="store_true", help="print JSON (at most 10,000 mismatches listed)")
    reconcile.set_defaults(command=_reconcile)


async def _reconcile(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.cli import reconciliation

    def printed(mismatch: reconciliation.Mismatch) -> None:
        print(mismatch.line(), flush=True)

    async with database(settings) as database_url, connected(database_url) as connection:
        async with opened_ledger(settings.effective_ledger_url(database_url)) as ledger:
            report = await reconciliation.reconcile(
                connection,
                ledger,
                request_events_max=settings.ledger_request_events_max,
                on_mismatch=None if arguments.json else printed,
            )
    if arguments.json:
        print(json.dumps(reconciliation.report_json(report), indent=2))
    else:
        checked = f"{report.intents_checked} intent(s) and {report.users_checked} user(s)' history"
        if report.ok:
            print(f"OK: {checked} match the ledger")
        else:
            print(f"FAILED: {report.mismatch_count} mismatch(es) in {checked}")
    return EXIT_OK if report.ok else EXIT_PROBLEM_FOUND
