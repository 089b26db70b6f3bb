"""`pm up`, `pm run TYPE`, `pm servers` and `pm db migrate`: the servers, the schema and the fleet.

`up` starts the servers (embedded unless configured), migrates, and runs the Procfile with a demo
(pm/dev/up.py); `run` runs one process type in this process (pm/cli/run.py); `servers` only starts the
servers and prints their URLs; `db migrate` only migrates (a refused migration exits 1). `up` and `run`
(but for the stand-ins `run psp-sim` and `run edge-auth`, which use no server) refuse to start, exit 2,
when a PSP URL is not the local simulator's and a PSP secret is unset, short or the simulator's public
value (pm/psp/secrets.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pm.cli import run as run_command
from pm.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM_FOUND,
    CommandError,
    database,
    first_line,
    redact_url,
    servers_running,
)
from pm.config.settings import Settings
from pm.psp import secrets as psp_secrets
from pm.store.migrate import DatabaseUnavailableError, MigrationError, migrate


def add_fleet_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pm up` and `pm run`, first in `pm --help`; add_commands registers the others."""
    up = commands.add_parser("up", help="run the whole fleet (servers, migrations, Procfile) with a demo")
    up.add_argument(
        "-c", "--concurrency", action="append", default=[], metavar="TYPE=N",
        help="processes of a type, e.g. -c settlement=3 (passed to honcho)",
    )  # fmt: skip
    # SIGTERM stops the fleet as it stops each of its services: their batches finish; exit 0.
    up.set_defaults(command=_up, terminated_exit_code=EXIT_OK)
    run = commands.add_parser("run", help="run one Procfile process type in this process (or `all`)")
    run.add_argument("process", type=run_command.process_type, metavar="TYPE", help=run_command.PROCESS_HELP)
    # SIGTERM is the ordinary stop of a service: its batches finish, what it read is handed back; exit 0.
    run.set_defaults(command=_run, terminated_exit_code=EXIT_OK)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pm servers` and `pm db migrate`."""
    servers = commands.add_parser("servers", help="start the embedded servers and run until Ctrl-C")
    servers.set_defaults(command=_servers)

    database_commands = commands.add_parser("db", help="database commands").add_subparsers(
        required=True, metavar="COMMAND"
    )
    database_commands.add_parser("migrate", help="apply pending sql/ migrations").set_defaults(command=_db_migrate)


async def _up(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.dev.up import run_up

    _refuse_unsafe_psp_secrets(settings)
    async with servers_running(settings) as (database_url, redis_url):
        await _migrate(database_url)
        ledger_url = settings.effective_ledger_url(database_url)
        print(f"database: {redact_url(database_url)}")
        print(f"redis:    {redact_url(redis_url)}")
        print(f"ledger:   {redact_url(ledger_url)}", flush=True)
        try:
            await run_up(settings, database_url, redis_url, ledger_url, arguments.concurrency)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
    return EXIT_OK


async def _run(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.config.logs import configure_json_logging

    configure_json_logging(settings.log_level)
    if arguments.process in run_command.STAND_INS:  # they use no server: starting embedded ones would be waste
        await _run_stand_in(arguments.process, settings)
        return EXIT_OK
    _refuse_unsafe_psp_secrets(settings)
    async with servers_running(settings) as (database_url, redis_url):
        ledger_url = settings.effective_ledger_url(database_url)
        await run_command.run_process(arguments.process, settings, database_url, redis_url, ledger_url)
    return EXIT_OK


async def _run_stand_in(process: str, settings: Settings) -> None:
    from pm.dev.edge_auth import EdgeAuthConfigError

    try:
        await run_command.run_process(process, settings, database_url="", redis_url="", ledger_url="")
    except EdgeAuthConfigError as exc:
        raise CommandError(f"edge-auth: {exc}") from exc


async def _servers(settings: Settings, arguments: argparse.Namespace) -> int:
    async with servers_running(settings) as (database_url, redis_url):
        # As shell assignments, so another terminal can `export` them and share these servers.
        print(f"PM_DATABASE_URL={database_url}")
        print(f"PM_REDIS_URL={redis_url}", flush=True)
        print("pm: servers running; Ctrl-C stops them", file=sys.stderr, flush=True)
        await asyncio.Event().wait()  # Runs until cancelled (Ctrl-C, SIGTERM): meant to run forever.
    return EXIT_OK


async def _db_migrate(settings: Settings, arguments: argparse.Namespace) -> int:
    async with database(settings) as database_url:
        await _migrate(database_url)
    return EXIT_OK


def _refuse_unsafe_psp_secrets(settings: Settings) -> None:
    """A process that would talk to a real PSP never starts with a missing, weak or public secret."""
    problem = psp_secrets.configuration_problem(settings)
    if problem is not None:
        raise CommandError(f"refusing to start: {problem}")


async def _migrate(database_url: str) -> None:
    try:
        applied_names = await migrate(database_url)
    except DatabaseUnavailableError as exc:
        raise CommandError(f"database {redact_url(database_url)}: {first_line(exc)}") from exc
    except MigrationError as exc:
        raise CommandError(f"migration: {first_line(exc)}", EXIT_PROBLEM_FOUND) from exc
    for name in applied_names:
        print(f"pm: applied {name}")
    if not applied_names:
        print("pm: database schema is up to date")
