"""Redis Streams operations the pipeline needs beyond what FastStream does (DESIGN.md §5, §10).

- `ensure_groups`: create every stage's group at id 0 (entries written before the group existed
  are still delivered);
- `publish_and_ack`: next-stage entries and the XACK of the batch in ONE atomic script call, so a
  crash can never leave a batch half published;
- `publish_many`: many pub/sub messages in one script call;
- `publish_and_add`: the outbox feed's round in one script call: status messages, then the final
  intents' entries on the history stage's stream;
- `pending_idle` / `claim`: find and take over entries a dead consumer left pending;
- `hand_back`: a stopping consumer marks its own pending entries idle, so another one claims them at once;
- `mark_data_present`: the marker whose absence says Redis lost its data (the status poller's recovery);
- `dead_letter`: move an entry that keeps failing to its dead-letter stream, atomically with its ack;
  the dead-letter stream keeps about its newest `entries_max` (XADD MAXLEN ~: it has no consumer group,
  operators read it, and every dropped entry's intent stays flagged in PostgreSQL);
- `trim_acknowledged`: trim a stage's stream only below what every group has acknowledged (never XADD
  MAXLEN there, which drops entries no group has read);
- `backlog`: a group's lag and pending count, for metrics and the gateway's backpressure;
- `stage_streams`: what `pm streams` shows of a stage (length, backlog, oldest pending, consumers,
  dead letters), in one round trip;
- `prune_idle_consumers`: delete consumers idle past a threshold with nothing pending, atomically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from pm.config.topology import Topology
from pm.domain.intent import Intent
from pm.redis.wire import is_cluster

ENTRY_FIELD = b"intent"


def entry_fields(intent: Intent, message: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The stream entry of `intent` (`message`: its `to_message()`, when the caller has it already)."""
    # orjson: the intent is encoded and decoded once per stage hop; the standard library's json was a
    # tenth of each stage's CPU.
    return {"intent": orjson.dumps(message if message is not None else intent.to_message())}


def decode_entry(fields: dict[bytes, bytes]) -> Intent:
    """The intent in a stream entry; raises ValueError/KeyError on a malformed entry."""
    return Intent.from_message(orjson.loads(fields[ENTRY_FIELD]))


class ClusterTopologyError(RuntimeError):
    """streams.yaml's stream names cannot run on the Redis Cluster configured (Topology.cluster_problem)."""


def check_cluster_topology(redis: aioredis.Redis, topology: Topology) -> None:
    """On a Redis Cluster, refuse a topology whose streams do not share one hash slot: its atomic scripts
    (publish-and-ack, dead letters) would fail with CROSSSLOT at the first batch instead of at startup."""
    problem = topology.cluster_problem() if is_cluster(redis) else None
    if problem is not None:
        raise ClusterTopologyError(problem)


async def ensure_groups(redis: aioredis.Redis, topology: Topology) -> list[str]:
    """Create every stage's group that is missing (at id 0, with its stream); the groups created."""
    check_cluster_topology(redis, topology)
    created = []
    for stage in topology.stages.values():
        try:
            await redis.xgroup_create(stage.stream, stage.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            created.append(stage.group)
    return created


async def mark_data_present(redis: aioredis.Redis, topology: Topology, value: str) -> bool:
    """Set the topology's data marker unless it is there; whether it was missing (Redis is new or lost
    its data). SET NX: of several pollers, exactly one learns of a loss."""
    return bool(await redis.set(topology.data_marker, value, nx=True))


@dataclass(frozen=True, slots=True)
class Publication:
    """What a batch sends on: the next stages' stream entries."""

    entries: list[tuple[str, dict[str, bytes]]]  # (stream, fields)


# One script call instead of a MULTI/EXEC of 2n+1 commands: Redis runs a script atomically just as it
# runs a transaction (no other client's command in between; no rollback on a runtime error in either),
# and the client packs one command and reads one reply instead of one "QUEUED" reply per command,
# which measured here was most of a stage's Redis CPU.
# KEYS: the acknowledged stream, then the target streams. ARGV: group, entry field, entry count,
# (target key index, payload) per entry, entry ids to ack.
_PUBLISH_AND_ACK_LUA = """
local group, field = ARGV[1], ARGV[2]
local i = 3
local count = tonumber(ARGV[i])
i = i + 1
for _ = 1, count do
    redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', field, ARGV[i + 1])
    i = i + 2
end
while i <= #ARGV do
    local last = math.min(i + 999, #ARGV)  -- unpack() is bounded by Lua's C stack
    redis.call('XACK', KEYS[1], group, unpack(ARGV, i, last))
    i = last + 1
end
return 1
"""
_PUBLISH_AND_ACK_SHA = hashlib.sha1(_PUBLISH_AND_ACK_LUA.encode()).hexdigest()


async def publish_and_ack(
    redis: aioredis.Redis, publication: Publication, stream: str, group: str, entry_ids: list[bytes]
) -> None:
    """XADD the publication's entries and XACK `entry_ids` in one call: no other
    client runs a command in between, and a crash of this process cannot leave the batch half sent."""
    keys = [stream]
    key_index: dict[str, int] = {}
    arguments: list[Any] = [group, ENTRY_FIELD, len(publication.entries)]
    for target, fields in publication.entries:
        index = key_index.get(target)
        if index is None:
            keys.append(target)
            index = key_index[target] = len(keys)  # Lua's KEYS is 1-based
        assert list(fields) == [ENTRY_FIELD.decode()], fields
        arguments += (index, fields[ENTRY_FIELD.decode()])
    arguments += entry_ids
    await _run_script(redis, _PUBLISH_AND_ACK_LUA, _PUBLISH_AND_ACK_SHA, keys, arguments)


# ARGV: (channel, payload) pairs. One command and one reply for a whole batch of messages.
_PUBLISH_MANY_LUA = """
for i = 1, #ARGV, 2 do
    redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""
_PUBLISH_MANY_SHA = hashlib.sha1(_PUBLISH_MANY_LUA.encode()).hexdigest()
PUBLISH_MANY_MAX = 10_000


async def publish_many(redis: aioredis.Redis, messages: list[tuple[str, bytes]]) -> None:
    """PUBLISH every (channel, payload) in one call, in order."""
    assert len(messages) <= PUBLISH_MANY_MAX, len(messages)
    if messages:
        await _run_script(redis, _PUBLISH_MANY_LUA, _PUBLISH_MANY_SHA, [], [part for m in messages for part in m])


# KEYS: the stream to add to. ARGV: entry field, message count, (channel, payload) per message, then the
# entries' payloads. The outbox feed's round: the app's status messages and the final intents' entries
# for the history stage, one command and one reply, in that order.
_PUBLISH_AND_ADD_LUA = """
local field, count = ARGV[1], tonumber(ARGV[2])
local i = 3
for _ = 1, count do
    redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
    i = i + 2
end
for j = i, #ARGV do
    redis.call('XADD', KEYS[1], '*', field, ARGV[j])
end
return 1
"""
_PUBLISH_AND_ADD_SHA = hashlib.sha1(_PUBLISH_AND_ADD_LUA.encode()).hexdigest()


async def publish_and_add(
    redis: aioredis.Redis, messages: list[tuple[str, bytes]], stream: str, entries: list[dict[str, bytes]]
) -> None:
    """PUBLISH every (channel, payload), in order, then XADD `entries` (from `entry_fields`) to `stream`:
    one call, so no other client's command runs between them."""
    assert len(messages) <= PUBLISH_MANY_MAX and len(entries) <= PUBLISH_MANY_MAX, (len(messages), len(entries))
    if not messages and not entries:
        return
    payloads = []
    for fields in entries:
        assert list(fields) == [ENTRY_FIELD.decode()], fields
        payloads.append(fields[ENTRY_FIELD.decode()])
    arguments = [ENTRY_FIELD, len(messages), *(part for message in messages for part in message), *payloads]
    await _run_script(redis, _PUBLISH_AND_ADD_LUA, _PUBLISH_AND_ADD_SHA, [stream], arguments)


async def _run_script(redis: aioredis.Redis, script: str, sha: str, keys: list[Any], arguments: list[Any]) -> None:
    try:
        await redis.evalsha(sha, len(keys), *keys, *arguments)
    except NoScriptError:  # a Redis that restarted (or another server): load it, once
        await redis.script_load(script)
        await redis.evalsha(sha, len(keys), *keys, *arguments)


# KEYS: the stream. ARGV: group, consumer, the idle time to leave, entry ids. For each entry still pending on
# `consumer`: its delivery counter one lower (XCLAIM ... RETRYCOUNT n-1 JUSTID sets it and counts nothing)
# and its idle time set, so it is claimed again that long before claim_idle_ms would otherwise let it.
_FORGIVE_LUA = """
local group, consumer, idle = ARGV[1], ARGV[2], ARGV[3]
local forgiven = 0
for i = 4, #ARGV do
    local row = redis.call('XPENDING', KEYS[1], group, ARGV[i], ARGV[i], 1)[1]
    if row and row[2] == consumer then
        local deliveries = math.max(tonumber(row[4]) - 1, 0)
        redis.call('XCLAIM', KEYS[1], group, consumer, 0, ARGV[i], 'IDLE', idle, 'RETRYCOUNT', deliveries, 'JUSTID')
        forgiven = forgiven + 1
    end
end
return forgiven
"""
_FORGIVE_SHA = hashlib.sha1(_FORGIVE_LUA.encode()).hexdigest()
FORGIVE_ENTRIES_MAX = 10_000


async def forgive_deliveries(
    redis: aioredis.Redis, stream: str, group: str, consumer: str, entry_ids: list[bytes], idle_ms: int
) -> None:
    """Undo the delivery of entries `consumer` could not handle because a dependency was down: each one
    still pending on it counts one delivery less and shows `idle_ms` of idleness. One atomic call."""
    assert len(entry_ids) <= FORGIVE_ENTRIES_MAX and idle_ms >= 0
    if entry_ids:
        await _run_script(redis, _FORGIVE_LUA, _FORGIVE_SHA, [stream], [group, consumer, idle_ms, *entry_ids])


@dataclass(frozen=True, slots=True)
class PendingEntry:
    entry_id: bytes
    consumer: bytes
    idle_ms: int
    deliveries: int


async def pending_idle(redis: aioredis.Redis, stream: str, group: str, idle_ms: int, count: int) -> list[PendingEntry]:
    """Entries pending for at least `idle_ms` on any consumer of `group` (oldest first)."""
    rows = await redis.xpending_range(stream, group, min="-", max="+", count=count, idle=idle_ms)
    return [
        PendingEntry(
            entry_id=_as_bytes(row["message_id"]),
            consumer=_as_bytes(row["consumer"]),
            idle_ms=int(row["time_since_delivered"]),
            deliveries=int(row["times_delivered"]),
        )
        for row in rows
    ]


async def claim(
    redis: aioredis.Redis, stream: str, group: str, consumer: str, idle_ms: int, entry_ids: list[bytes]
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XCLAIM entries still idle for `idle_ms` (another claimer may have won); returns those taken."""
    if not entry_ids:
        return []
    claimed = await redis.xclaim(stream, group, consumer, min_idle_time=idle_ms, message_ids=entry_ids)
    # An entry deleted from the stream (trimmed) comes back with no fields: nothing to process.
    return [(entry_id, fields) for entry_id, fields in claimed if fields]


async def hand_back(
    redis: aioredis.Redis, stream: str, group: str, consumer: str, idle_ms: int, page_size: int, entries_max: int
) -> int:
    """Mark every entry pending on `consumer` as idle for `idle_ms` (XCLAIM to itself with IDLE and JUSTID:
    its delivery count stays), so another consumer's next claim round takes it at once instead of after
    `idle_ms`: what a stopping consumer read and did not acknowledge. At most `entries_max`; returns how many."""
    handed = 0
    start: bytes | str = "-"
    while handed < entries_max:
        rows = await redis.xpending_range(
            stream, group, min=start, max="+", count=min(page_size, entries_max - handed), consumername=consumer
        )
        if not rows:
            break
        entry_ids = [_as_bytes(row["message_id"]) for row in rows]
        await redis.xclaim(stream, group, consumer, min_idle_time=0, message_ids=entry_ids, idle=idle_ms, justid=True)
        handed += len(entry_ids)
        start = "(" + _as_str(entry_ids[-1])  # exclusive: the next page starts after this one
    return handed


async def dead_letter(
    redis: aioredis.Redis,
    *,
    stream: str,
    group: str,
    dead_letter_stream: str,
    entries: list[tuple[bytes, dict[bytes, bytes], str, int]],
    entries_max: int,
) -> None:
    """Move (entry_id, fields, error, deliveries) entries to the dead-letter stream and ack them; the
    dead-letter stream keeps about its newest `entries_max` entries (approximate trimming: whole nodes)."""
    assert entries_max > 0
    if not entries:
        return
    async with redis.pipeline(transaction=True) as pipe:
        for entry_id, fields, error, deliveries in entries:
            record: dict[str, Any] = {k.decode(): v for k, v in fields.items()}
            record.update(
                source_stream=stream,
                source_group=group,
                source_entry_id=entry_id,
                error=error[:2000],
                deliveries=str(deliveries),
            )
            pipe.xadd(dead_letter_stream, record, maxlen=entries_max, approximate=True)
        pipe.xack(stream, group, *[entry[0] for entry in entries])
        await pipe.execute()


@dataclass(frozen=True, slots=True)
class Backlog:
    lag: int  # entries not yet delivered to the group
    pending: int  # delivered, not yet acknowledged


async def backlog(redis: aioredis.Redis, stream: str, group: str) -> Backlog | None:
    """The group's backlog, or None when the stream or group does not exist yet."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        return None
    return _backlog_of(groups, group)


def _backlog_of(groups: list[dict[Any, Any]], group: str) -> Backlog | None:
    """`group`'s backlog from an XINFO GROUPS reply; None when the group is not there."""
    for info in groups:
        if _as_str(info["name"]) == group:
            lag = info.get("lag")
            return Backlog(lag=int(lag) if lag is not None else 0, pending=int(info["pending"]))
    return None


async def trim_acknowledged(redis: aioredis.Redis, stream: str, groups: Iterable[str]) -> int:
    """Drop entries every one of `groups` has acknowledged; returns how many were removed.

    The floor is, per group, its oldest pending entry, or, with nothing pending, the entry after its
    last delivered one; entries below the lowest floor are acknowledged by all. A group that does not
    exist yet has acknowledged nothing, so then nothing is trimmed.
    """
    try:
        infos = {_as_str(info["name"]): info for info in await redis.xinfo_groups(stream)}
    except ResponseError:
        return 0
    floors: list[tuple[int, int]] = []
    for group in groups:
        info = infos.get(group)
        if info is None:
            return 0
        if int(info["pending"]) > 0:
            summary = await redis.xpending(stream, group)
            floors.append(_parse_id(summary["min"]))
        else:
            milliseconds, sequence = _parse_id(info["last-delivered-id"])
            floors.append((milliseconds, sequence + 1))
    if not floors:
        return 0
    milliseconds, sequence = min(floors)
    if (milliseconds, sequence) <= (0, 0):
        return 0
    return int(await redis.xtrim(stream, minid=f"{milliseconds}-{sequence}", approximate=True))


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    milliseconds, _, sequence = _as_str(entry_id).partition("-")
    return int(milliseconds), int(sequence or 0)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def dead_letter_lengths(redis: aioredis.Redis, topology: Topology) -> dict[str, int]:
    """Entries in each stage's dead-letter stream (0 when it does not exist), in one round trip."""
    stages = list(topology.stages.values())
    async with redis.pipeline(transaction=False) as pipe:
        for stage in stages:
            pipe.xlen(stage.dead_letter_stream)
        lengths = await pipe.execute()
    return {stage.name: int(length) for stage, length in zip(stages, lengths, strict=True)}


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    name: str
    pending: int
    idle_ms: int  # since its last read or claim (Redis 7.2+: its last attempted interaction)


@dataclass(frozen=True, slots=True)
class StageStreams:
    """What an operator sees of one stage's streams (`pm streams`)."""

    stream: str
    group: str
    length: int  # entries in the stream (trimmed below what the group acknowledged)
    backlog: Backlog | None  # None: the group does not exist (yet)
    oldest_pending_age_ms: int | None  # since the oldest pending entry was added; None: nothing pending
    consumers: list[ConsumerStatus]
    dead_letters: int


async def stage_streams(redis: aioredis.Redis, stream: str, group: str, dead_letter_stream: str) -> StageStreams:
    """One stage's stream length, group backlog, oldest pending entry, consumers and dead letters, in one
    round trip (two on a cluster; a stream or group that does not exist yet reads as empty)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
        pipe.xpending(stream, group)
        pipe.xinfo_consumers(stream, group)
        pipe.xlen(dead_letter_stream)
        if not is_cluster(redis):
            pipe.time()
        length, groups, pending, consumers, dead_letters, *clock = await pipe.execute(raise_on_error=False)
    # A cluster pipeline refuses TIME (it has no key to route by): asked of a node of its own there.
    now_s, now_us = clock[0] if clock else await redis.time()
    backlog = None if isinstance(groups, Exception) else _backlog_of(groups, group)
    oldest_age_ms = None
    if not isinstance(pending, Exception) and pending["pending"] and pending["min"]:
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        oldest_age_ms = max(0, now_ms - _parse_id(pending["min"])[0])
    listed = [] if isinstance(consumers, Exception) else consumers
    return StageStreams(
        stream=stream,
        group=group,
        length=int(length),
        backlog=backlog,
        oldest_pending_age_ms=oldest_age_ms,
        consumers=[ConsumerStatus(_as_str(c["name"]), int(c["pending"]), int(c["idle"])) for c in listed],
        dead_letters=int(dead_letters),
    )


# Deletes, atomically, the group's consumers idle at least ARGV[2] ms that hold no pending entry (at most
# ARGV[3] of them): no consumer can read an entry between the check and its deletion, and XGROUP
# DELCONSUMER of a consumer with pending entries would drop them from the group's pending list.
# KEYS: the stream. ARGV: group, idle_ms, limit. Returns the deleted consumers' names.
_PRUNE_CONSUMERS_LUA = """
local idle_ms, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local deleted = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    if #deleted >= limit then
        break
    end
    local info = {}
    for i = 1, #consumer, 2 do
        info[consumer[i]] = consumer[i + 1]
    end
    if info['pending'] == 0 and info['idle'] >= idle_ms then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
        deleted[#deleted + 1] = info['name']
    end
end
return deleted
"""
_PRUNE_CONSUMERS_SHA = hashlib.sha1(_PRUNE_CONSUMERS_LUA.encode()).hexdigest()


async def prune_idle_consumers(redis: aioredis.Redis, stream: str, group: str, idle_ms: int, limit: int) -> list[str]:
    """Delete up to `limit` consumers of `group` idle at least `idle_ms` with nothing pending; their names.
    A stream or group that does not exist has none."""
    assert idle_ms > 0 and limit > 0, (idle_ms, limit)
    arguments = [group, idle_ms, limit]
    try:
        try:
            deleted = await redis.evalsha(_PRUNE_CONSUMERS_SHA, 1, stream, *arguments)
        except NoScriptError:
            await redis.script_load(_PRUNE_CONSUMERS_LUA)
            deleted = await redis.evalsha(_PRUNE_CONSUMERS_SHA, 1, stream, *arguments)
    except ResponseError as exc:
        if "no such key" in str(exc).lower() or "nogroup" in str(exc).lower():
            return []
        raise
    return [_as_str(name) for name in deleted]
