"""Dead letters: what the operator's `pm dlq` commands read and do.

A stage moves an entry it could not handle `max_deliveries` times to its dead-letter stream
(`pm:dead:<stage>`, streams.yaml) with the error, and flags the intent `needs_operator` in PostgreSQL;
the status poller then leaves the intent alone (consumers/poller.py), so a poison intent costs its
deliveries once, not every `stuck_after_s` forever. The operator finds the cause, removes it, and
replays:

- `replay` re-drives intents from PostgreSQL in their CURRENT state (not the dead entry's copy, which
  may be stale): one compare-and-set clears `needs_operator` (only the replay that clears it publishes,
  so replaying twice, or two operators at once, publishes once), then one MULTI/EXEC publishes each
  intent to the stage for its state (the topology knows which) and deletes its dead letters. A crash
  between the two leaves an unflagged intent without an entry: the poller re-drives it after
  `stuck_after_s`, as any lost entry. A final intent goes to the history stage while it is not
  `finished`; a finished one is refused: nothing changes.
- `drop` deletes dead letters (a malformed entry, or an intent the operator settled by hand); the
  intents stay flagged.

An operator names a dead letter by its intent's id (a uuid) or by its entry id in the dead-letter
stream (`1712345678901-0`, e.g. for a malformed entry, which names no intent). A dead-letter stream
keeps about its newest PM_DEAD_LETTER_STREAM_ENTRIES_MAX entries; an intent whose entry was trimmed
stays flagged and is replayed by its id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from pm.config.topology import Stage, Topology
from pm.domain.intent import Intent
from pm.redis import streams
from pm.store.intents import INTENT_COLUMNS, intent_from_row

# Dead-letter streams are read in pages of this many entries (XRANGE COUNT).
SCAN_PAGE_ENTRIES = 1_000
# One replay statement and one MULTI/EXEC per this many intents.
REPLAY_BATCH_MAX = 1_000
# `pm dlq replay/drop --all` handle at most this many dead letters per run (run again for more).
SELECTION_ENTRIES_MAX = 1_000_000
ERROR_SHOWN_LENGTH_MAX = 2_000

_ENTRY_ID = re.compile(r"[0-9]+-[0-9]+")


class DeadLetterError(Exception):
    """The operator's request cannot be done as asked; nothing was changed. The message says why."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stage: str
    entry_id: str
    intent_id: uuid.UUID | None  # None: a malformed entry
    deliveries: int
    error: str
    source_entry_id: str

    @classmethod
    def from_entry(cls, stage: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
        return cls(
            stage=stage,
            entry_id=_text(entry_id),
            intent_id=_intent_id(fields),
            deliveries=int(fields.get(b"deliveries", b"0") or 0),
            error=_text(fields.get(b"error", b"")),
            source_entry_id=_text(fields.get(b"source_entry_id", b"")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "entry_id": self.entry_id,
            "intent_id": str(self.intent_id) if self.intent_id else None, "deliveries": self.deliveries,
            "error": self.error[:ERROR_SHOWN_LENGTH_MAX], "source_entry_id": self.source_entry_id,
        }  # fmt: skip


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _intent_id(fields: dict[bytes, bytes]) -> uuid.UUID | None:
    try:
        return uuid.UUID(orjson.loads(fields[streams.ENTRY_FIELD])["id"])
    except (KeyError, ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        return None


def stages_named(topology: Topology, name: str | None) -> list[Stage]:
    """The stage called `name`, or every stage; a TopologyError names the stages when there is no such one."""
    return [topology.stage(name)] if name is not None else list(topology.stages.values())


async def newest(redis: aioredis.Redis, stage: Stage, count: int) -> list[DeadLetter]:
    """The stage's newest `count` dead letters, newest first."""
    rows = await redis.xrevrange(stage.dead_letter_stream, count=max(1, min(count, SCAN_PAGE_ENTRIES)))
    return [DeadLetter.from_entry(stage.name, entry_id, fields) for entry_id, fields in rows]


async def scan(redis: aioredis.Redis, stage: Stage) -> AsyncIterator[DeadLetter]:
    """Every dead letter of the stage, oldest first, a page per round trip."""
    start = "-"
    while True:
        rows = await redis.xrange(stage.dead_letter_stream, min=start, count=SCAN_PAGE_ENTRIES)
        for entry_id, fields in rows:
            yield DeadLetter.from_entry(stage.name, entry_id, fields)
        if len(rows) < SCAN_PAGE_ENTRIES:
            return
        start = "(" + _text(rows[-1][0])  # exclusive: after the last one read


async def find(redis: aioredis.Redis, topology: Topology, identifier: str) -> list[DeadLetter]:
    """The dead letters an identifier names in any stage: an intent's (uuid), or one entry (entry id)."""
    intent_id, entry_id = parse_identifier(identifier)
    found: list[DeadLetter] = []
    for stage in topology.stages.values():
        if entry_id is not None:
            rows = await redis.xrange(stage.dead_letter_stream, min=entry_id, max=entry_id, count=1)
            found += [DeadLetter.from_entry(stage.name, i, fields) for i, fields in rows]
            continue
        async for letter in scan(redis, stage):
            if letter.intent_id == intent_id:
                found.append(letter)
    return found


def parse_identifier(identifier: str) -> tuple[uuid.UUID | None, str | None]:
    """(intent id, None) or (None, entry id); DeadLetterError for anything else."""
    if _ENTRY_ID.fullmatch(identifier):
        return None, identifier
    try:
        return uuid.UUID(identifier), None
    except ValueError:
        raise DeadLetterError(f"{identifier!r} is neither an intent id nor a dead-letter entry id") from None


@dataclass(slots=True)
class Selection:
    """What a replay or drop names in one stage: intents, and the dead letters to delete."""

    intent_ids: list[uuid.UUID] = field(default_factory=list)
    letters: dict[uuid.UUID | None, list[str]] = field(default_factory=dict)  # intent id -> entry ids

    def add(self, intent_id: uuid.UUID | None, entry_id: str | None) -> None:
        if intent_id is not None and intent_id not in self.letters:
            self.intent_ids.append(intent_id)
        entry_ids = self.letters.setdefault(intent_id, [])
        if entry_id is not None and entry_id not in entry_ids:
            entry_ids.append(entry_id)

    def entry_ids(self, intent_ids: Iterable[uuid.UUID | None]) -> list[str]:
        return [entry_id for intent_id in intent_ids for entry_id in self.letters.get(intent_id, [])]


async def select(redis: aioredis.Redis, stage: Stage, identifiers: list[str] | None) -> Selection:
    """The intents and dead letters of `stage` that `identifiers` name (None: all of the stage's).

    An intent id selects the intent (with its dead letters here, if any are left: one may have been
    trimmed); an entry id must be a dead letter of this stage."""
    wanted = [parse_identifier(identifier) for identifier in identifiers or ()]
    wanted_intents = {intent_id for intent_id, _ in wanted if intent_id is not None}
    wanted_entries = {entry_id for _, entry_id in wanted if entry_id is not None}
    selection = Selection()
    for intent_id in wanted_intents:
        selection.add(intent_id, None)
    seen_entries: set[str] = set()
    count = 0
    async for letter in scan(redis, stage):
        count += 1
        if count > SELECTION_ENTRIES_MAX:
            break
        if identifiers is None or letter.intent_id in wanted_intents or letter.entry_id in wanted_entries:
            selection.add(letter.intent_id, letter.entry_id)
            seen_entries.add(letter.entry_id)
    missing = sorted(wanted_entries - seen_entries)
    if missing:
        raise DeadLetterError(f"no dead letter {missing[0]} in stage {stage.name} ({stage.dead_letter_stream})")
    return selection


@dataclass(frozen=True, slots=True)
class ReplayReport:
    replayed: list[tuple[Intent, str]]  # each intent as published, and the stage it went to
    not_flagged: list[uuid.UUID]  # replayed before (or never dead-lettered): nothing published
    deleted_letters: int


_FLAGS_SQL = "SELECT id, state, needs_operator, finished FROM pm.intent WHERE id = ANY($1::uuid[])"
# Flagged and not finished, in the stage's states (the partial index intent_unfinished serves it).
_FLAGGED_IN_STATES_SQL = (
    "SELECT id FROM pm.intent WHERE NOT finished AND needs_operator AND state = ANY($1::text[])"
    " ORDER BY updated_at LIMIT $2"
)
# The compare-and-set of a replay: only the caller that clears the flag publishes the intent. Setting
# redriven_at makes the poller count this as a re-drive (it waits stuck_after_s before another). Not
# finished: an open intent, or a final one the history stage has not ended yet (it goes there).
_REPLAY_SQL = f"""
UPDATE pm.intent SET needs_operator = false, redriven_at = clock_timestamp()
WHERE id = ANY($1::uuid[]) AND needs_operator AND NOT finished
RETURNING {INTENT_COLUMNS}
"""


async def replay(
    pool: asyncpg.Pool | asyncpg.Connection,
    redis: aioredis.Redis,
    topology: Topology,
    stage: Stage,
    identifiers: list[str] | None,
) -> ReplayReport:
    """Re-drive the named intents from PostgreSQL. None: every one with a dead letter in `stage`, and every
    intent flagged in PostgreSQL in a state `stage` consumes whose dead letter is gone (a Redis flush,
    `pm dlq drop`, trimming): the flag, not the stream, is what waits for the operator.

    Raises DeadLetterError, changing nothing, when one is unknown, finished (final, and ended by the history
    stage), or a dead letter names none. A final intent not finished goes to the history stage."""
    selection = await select(redis, stage, identifiers)
    if identifiers is None:
        states = [str(state) for state in stage.input_states]
        for row in await pool.fetch(_FLAGGED_IN_STATES_SQL, states, SELECTION_ENTRIES_MAX):
            selection.add(row["id"], None)
    if selection.letters.get(None):
        raise DeadLetterError(
            f"dead letter {selection.letters[None][0]} names no intent (malformed): drop it with `pm dlq drop`"
        )
    rows = {row["id"]: row for row in await pool.fetch(_FLAGS_SQL, selection.intent_ids)}
    for intent_id in selection.intent_ids:
        row = rows.get(intent_id)
        if row is None:
            raise DeadLetterError(f"no intent {intent_id}")
        if row["finished"]:
            raise DeadLetterError(
                f"intent {intent_id} is {row['state']} (final) and finished: nothing to replay;"
                " `pm dlq drop` its dead letters"
            )
    not_flagged = [intent_id for intent_id in selection.intent_ids if not rows[intent_id]["needs_operator"]]
    unflagged_before = set(not_flagged)
    replayed: list[tuple[Intent, str]] = []
    deleted = 0
    for start in range(0, len(selection.intent_ids), REPLAY_BATCH_MAX):
        batch = selection.intent_ids[start : start + REPLAY_BATCH_MAX]
        intents = [intent_from_row(row) for row in await pool.fetch(_REPLAY_SQL, batch)]
        # Not cleared now but unflagged before: replayed already; its dead letters are stale. (One that
        # finished meanwhile keeps them, for the operator to see.)
        stale = [intent_id for intent_id in batch if intent_id in unflagged_before]
        deleted += await _publish(redis, topology, stage, intents, selection.entry_ids([i.id for i in intents] + stale))
        replayed += [(intent, topology.stage_for_state(intent.state).name) for intent in intents]
    return ReplayReport(replayed, not_flagged, deleted)


async def _publish(
    redis: aioredis.Redis, topology: Topology, stage: Stage, intents: list[Intent], entry_ids: list[str]
) -> int:
    """Publish the intents to their stages and delete the dead letters in one MULTI/EXEC."""
    if not intents and not entry_ids:
        return 0
    async with redis.pipeline(transaction=True) as pipe:
        for intent in intents:  # a final one to the history stage (the replay's compare-and-set: not finished)
            pipe.xadd(topology.stage_for_state(intent.state).stream, streams.entry_fields(intent))
        if entry_ids:
            pipe.xdel(stage.dead_letter_stream, *entry_ids)
        replies = await pipe.execute()
    return int(replies[-1]) if entry_ids else 0


async def drop(redis: aioredis.Redis, stage: Stage, identifiers: list[str] | None) -> int:
    """Delete the named dead letters of `stage` (None: all of them); the intents stay as they are."""
    selection = await select(redis, stage, identifiers)
    for intent_id in selection.intent_ids:
        if not selection.letters[intent_id]:
            raise DeadLetterError(f"intent {intent_id} has no dead letter in stage {stage.name}")
    entry_ids = selection.entry_ids(selection.letters)
    deleted = 0
    for start in range(0, len(entry_ids), SCAN_PAGE_ENTRIES):
        deleted += int(await redis.xdel(stage.dead_letter_stream, *entry_ids[start : start + SCAN_PAGE_ENTRIES]))
    return deleted


async def intent_rows(pool: asyncpg.Pool | asyncpg.Connection, intent_ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """The current state of the intents dead letters name (one query), for listings."""
    rows = await pool.fetch(
        "SELECT id, state, version, needs_operator, operation_type, amount_minor, currency, updated_at"
        " FROM pm.intent WHERE id = ANY($1::uuid[])",
        intent_ids,
    )
    return {row["id"]: dict(row) for row in rows}


async def flagged_count(pool: asyncpg.Pool | asyncpg.Connection) -> int:
    """Intents waiting for an operator (dead-lettered, not finished: open, or final and dead-lettered by the
    history stage), their dead letters trimmed or not."""
    return await pool.fetchval(
        # The partial index intent_unfinished serves it.
        "SELECT count(*) FROM pm.intent WHERE NOT finished AND needs_operator"
    )
