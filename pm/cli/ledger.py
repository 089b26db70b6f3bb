"""`pm ledger check|demo`: the ledger itself, without the pipeline (ledger/check.py, pm/dev/ledger_demo.py).

The ledger is the one the settings name (`Settings.effective_ledger_url`); the embedded PostgreSQL is
started only when that is the `postgres` backend. `check` exits 1 when it finds a problem, 2 when it finds
only an imbalance it could not confirm or rule out (transfers on that ledger between every two scans).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from pm.cli.common import EXIT_CANNOT_RUN, EXIT_OK, EXIT_PROBLEM_FOUND, CommandError, database, first_line, redact_url
from pm.config.settings import Settings

if TYPE_CHECKING:
    from ledger import Ledger


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger_commands = commands.add_parser("ledger", help="ledger commands").add_subparsers(
        required=True, metavar="COMMAND"
    )
    check = ledger_commands.add_parser("check", help="check the ledger's invariants")
    check.add_argument(
        "--allow-pending-transit",
        action="store_true",
        help="tolerate pending holds in transit (intents still in flight); posted transit must still be 0",
    )
    check.set_defaults(command=_ledger_check)
    ledger_commands.add_parser("demo", help="seed a small demo ledger").set_defaults(command=_ledger_demo)


async def _ledger_check(settings: Settings, arguments: argparse.Namespace) -> int:
    from ledger.check import format_report, run_check

    async with _ledger_database(settings) as database_url:
        async with opened_ledger(settings.effective_ledger_url(database_url)) as ledger:
            report = await run_check(ledger, allow_pending_transit=arguments.allow_pending_transit)
    print(format_report(report))
    if report.problems:
        return EXIT_PROBLEM_FOUND
    # Out of balance while transfers kept landing on that ledger: neither a problem nor OK.
    return EXIT_CANNOT_RUN if report.inconclusive else EXIT_OK


async def _ledger_demo(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.dev.ledger_demo import NotADemoLedgerError, seed_demo

    async with _ledger_database(settings) as database_url:
        ledger_url = settings.effective_ledger_url(database_url)
        async with opened_ledger(ledger_url) as ledger:
            try:
                await seed_demo(ledger)
            except NotADemoLedgerError as exc:
                raise CommandError(f"ledger {redact_url(ledger_url)}: {exc}") from exc
    print(f"pm: demo ledger seeded in {redact_url(ledger_url)}")
    return EXIT_OK


@contextlib.asynccontextmanager
async def _ledger_database(settings: Settings) -> AsyncIterator[str | None]:
    """The database the ledger lives in, started only when the ledger is the `postgres` backend."""
    if not settings.ledger_needs_database():
        yield None
        return
    async with database(settings) as database_url:
        yield database_url


@contextlib.asynccontextmanager
async def opened_ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    """`open_ledger`, with a bad URL or an unreachable server turned into a one-line CommandError."""
    # Imported here so `pm db migrate` and `pm servers` work without loading the TigerBeetle client.
    from ledger import LedgerUnavailableError, LedgerUrlError, open_ledger

    try:
        async with open_ledger(ledger_url) as ledger:
            yield ledger
    except (LedgerUrlError, LedgerUnavailableError) as exc:
        raise CommandError(f"ledger {redact_url(ledger_url)}: {first_line(exc)}") from exc
