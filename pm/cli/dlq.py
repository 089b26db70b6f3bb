"""`pm dlq list|show|replay|drop`: the operator's dead-letter commands (what they do: pm/cli/dead_letters.py).

Each opens the database, Redis and the topology (`_dlq_backends`), calls dead_letters.py, and prints a
table or JSON. A refused replay or drop exits 1 with nothing changed. The Redis client and dead_letters.py
are imported inside the commands: main.py loads this module for every `pm` command, which need neither.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from pm.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM_FOUND,
    CommandError,
    database_connection,
    first_line,
    redact_url,
    servers_running,
)
from pm.config.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    replay.add_argument(
        "--all",
        action="store_true",
        help="every intent with a dead letter in STAGE, and every flagged intent in a state STAGE consumes"
        " whose dead letter is gone",
    )
    replay.add_argument("--json", action="store_true", help="print JSON")
    replay.set_defaults(command=_dlq_replay)
    drop = dlq.add_parser("drop", help="delete dead letters; their intents stay flagged for an operator")
    drop.add_argument("stage")
    drop.add_argument("identifiers", nargs="*", metavar="ID", help=identifiers)
    drop.add_argument("--all", action="store_true", help="every dead letter of STAGE")
    drop.set_defaults(command=_dlq_drop)


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
    print(f"{flagged} intent(s) wait for an operator (needs_operator, not finished): `pm dlq replay STAGE ID`")
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
