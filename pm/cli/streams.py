"""`pm streams` and `pm streams consumers [--prune IDLE]`: the pipeline's streams as an operator sees them.

`pm streams` shows, per stage (streams.yaml), its stream's length, its group's lag and pending count,
the age of its oldest pending entry, its consumers with their idle times, and its dead letters; one
round trip per stage (pm/redis/streams.py `stage_streams`). `pm streams consumers` lists the consumers;
with `--prune IDLE` it deletes those idle longer than IDLE that hold no pending entries (XGROUP
DELCONSUMER, atomically checked: pm/redis/streams.py `prune_idle_consumers`), as the status poller does
on its own after PM_STREAM_CONSUMER_PRUNE_IDLE_S. A bad IDLE or stage exits 2 with nothing changed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from pm.cli.common import EXIT_OK, CommandError, first_line, redact_url, redis_running
from pm.config.settings import Settings

# Consumers shown per stage in the table (all are counted; --json lists them all).
CONSUMERS_SHOWN_MAX = 20
# `--prune` deletes at most this many consumers per stage per run (run again for more).
PRUNE_CONSUMERS_MAX = 10_000
IDLE_S_MIN = 1
IDLE_S_MAX = 365 * 86_400

_DURATION = re.compile(r"(?P<number>[0-9]{1,9})(?P<unit>ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    streams = commands.add_parser(
        "streams", help="per stage: stream length, group lag, pending, oldest pending age, consumers, dead letters"
    )
    streams.add_argument("--json", action="store_true", help="print JSON")
    streams.set_defaults(command=_streams_show)
    topics = streams.add_subparsers(required=False, metavar="COMMAND")
    consumers = topics.add_parser(
        "consumers", help="each stage's consumers; --prune IDLE deletes those idle longer with nothing pending"
    )
    consumers.add_argument("stage", nargs="?", default=None, help="one stage (default: every stage)")
    consumers.add_argument(
        "--prune", metavar="IDLE", default=None, help="delete consumers idle longer than this (90s, 30m, 1h, 2d)"
    )
    consumers.add_argument("--json", action="store_true", help="print JSON")
    consumers.set_defaults(command=_streams_consumers)


def parse_idle_ms(text: str) -> int:
    """`--prune IDLE`: a number and a unit (ms, s, m, h, d), from a second to a year, as milliseconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise CommandError(f"idle time {text!r}: give a number and a unit (s, m, h, d), e.g. 90s, 30m, 1h")
    idle_ms = int(match["number"]) * _UNIT_MS[match["unit"]]
    if not IDLE_S_MIN * 1000 <= idle_ms <= IDLE_S_MAX * 1000:
        raise CommandError(f"idle time {text!r}: from {IDLE_S_MIN} s to {IDLE_S_MAX // 86_400} days")
    return idle_ms


async def _streams_show(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.redis import streams

    async with _redis(settings) as (redis, topology):
        shown = {
            stage.name: await streams.stage_streams(redis, stage.stream, stage.group, stage.dead_letter_stream)
            for stage in topology.stages.values()
        }
    if arguments.json:
        print(json.dumps({name: _status_json(status) for name, status in shown.items()}, indent=2))
        return EXIT_OK
    print(
        f"{'stage':16} {'stream':28} {'length':>8} {'lag':>8} {'pending':>8} {'oldest':>9} {'consumers':>9} {'dead':>6}"
    )
    for name, status in shown.items():
        lag = "-" if status.backlog is None else str(status.backlog.lag)
        pending = "-" if status.backlog is None else str(status.backlog.pending)
        oldest, consumers = _age(status.oldest_pending_age_ms), len(status.consumers)
        print(f"{name:16} {status.stream:28} {status.length:>8} {lag:>8} {pending:>8}"
              f" {oldest:>9} {consumers:>9} {status.dead_letters:>6}")  # fmt: skip
        for consumer in sorted(status.consumers, key=lambda c: c.idle_ms)[:CONSUMERS_SHOWN_MAX]:
            print(f"    {consumer.name}  pending={consumer.pending}  idle={_age(consumer.idle_ms)}")
        if len(status.consumers) > CONSUMERS_SHOWN_MAX:
            print(f"    … {len(status.consumers) - CONSUMERS_SHOWN_MAX} more (`pm streams consumers {name}`)")
    print("(- : no group yet; oldest: age of the oldest pending entry; idle: since a consumer's last read)")
    return EXIT_OK


async def _streams_consumers(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.redis import streams

    idle_ms = parse_idle_ms(arguments.prune) if arguments.prune is not None else None  # before anything opens
    async with _redis(settings) as (redis, topology):
        stages = _stages(topology, arguments.stage)
        pruned: dict[str, list[str]] = {}
        if idle_ms is not None:
            for stage in stages:
                pruned[stage.name] = await streams.prune_idle_consumers(
                    redis, stage.stream, stage.group, idle_ms, PRUNE_CONSUMERS_MAX
                )
        shown = {
            stage.name: await streams.stage_streams(redis, stage.stream, stage.group, stage.dead_letter_stream)
            for stage in stages
        }
    if arguments.json:
        listing: dict[str, Any] = {
            name: {"consumers": [_consumer_json(c) for c in status.consumers], "pruned": pruned.get(name, [])}
            for name, status in shown.items()
        }
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    for name, status in shown.items():
        print(f"{name} ({status.stream}, group {status.group}): {len(status.consumers)} consumer(s)")
        for consumer in sorted(status.consumers, key=lambda c: c.idle_ms):
            print(f"    {consumer.name}  pending={consumer.pending}  idle={_age(consumer.idle_ms)}")
        for consumer_name in pruned.get(name, []):
            print(f"    pruned {consumer_name}")
    if idle_ms is not None:
        total = sum(len(names) for names in pruned.values())
        print(f"{total} consumer(s) idle longer than {arguments.prune} with nothing pending deleted")
    return EXIT_OK


@contextlib.asynccontextmanager
async def _redis(settings: Settings) -> AsyncIterator[tuple[Any, Any]]:
    """(Redis client, topology); a bad topology or an unreachable Redis is one line, exit 2."""
    from redis.exceptions import RedisError

    from pm.config.topology import TopologyError, load_topology
    from pm.redis.wire import redis_from_url

    try:
        topology = load_topology(settings.streams_file)
    except (OSError, TopologyError) as exc:
        raise CommandError(f"topology {settings.streams_file}: {first_line(exc)}") from exc
    async with redis_running(settings) as redis_url:
        redis = redis_from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        try:
            yield redis, topology
        except RedisError as exc:
            raise CommandError(f"redis {redact_url(redis_url)}: {first_line(exc)}") from exc
        finally:
            await redis.aclose()


def _stages(topology: Any, name: str | None) -> list[Any]:
    from pm.config.topology import TopologyError

    try:
        return [topology.stage(name)] if name is not None else list(topology.stages.values())
    except TopologyError as exc:
        raise CommandError(str(exc)) from exc


def _age(milliseconds: int | None) -> str:
    if milliseconds is None:
        return "-"
    if milliseconds < 10_000:
        return f"{milliseconds}ms"
    seconds = milliseconds // 1000
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02}m"


def _consumer_json(consumer: Any) -> dict[str, Any]:
    return {"name": consumer.name, "pending": consumer.pending, "idle_ms": consumer.idle_ms}


def _status_json(status: Any) -> dict[str, Any]:
    return {
        "stream": status.stream,
        "group": status.group,
        "length": status.length,
        "lag": None if status.backlog is None else status.backlog.lag,
        "pending": None if status.backlog is None else status.backlog.pending,
        "oldest_pending_age_ms": status.oldest_pending_age_ms,
        "consumers": [_consumer_json(c) for c in status.consumers],
        "dead_letters": status.dead_letters,
    }
