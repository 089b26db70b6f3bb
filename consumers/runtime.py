"""The stage loop: read a batch, handle it, commit, then publish-and-ack in one atomic call.

Reading is FastStream's (a batch Redis Streams subscriber per stage, `max_records` = the stage's
batch size, manual acknowledgement). What FastStream does not do is here, on redis-py
(DESIGN.md §10): claiming entries a dead consumer left pending, dead letters after `max_deliveries`,
and the atomic publish-and-ack. Per batch:

1. decode the entries (a malformed entry goes straight to the dead-letter stream);
2. call the stage's handler for the whole batch -> transitions (if the batch fails, each entry is
   retried alone, so one poisoned entry cannot take its batchmates down with it);
3. apply all transitions in one SQL statement (compare-and-set on state);
4. one atomic Redis call (a Lua script, pm.redis.streams): the next stage's entries and the XACK of the batch.
The app's status messages are not sent here: the outbox worker publishes them from the event rows that
step 3 wrote in the same statement (consumers/outbox_feed.py), so a crash after a commit cannot lose one.
A crash anywhere before 4 leaves the entries pending; they are claimed and handled again, and the
compare-and-set, the derived ledger ids and idempotent handlers make that harmless.

A dependency that is down (PostgreSQL unreachable or dropping connections, the ledger unreachable, Redis)
is an operating condition, not a poisoned entry: the whole batch stays pending, its delivery is not
counted against `max_deliveries` (pm.redis.streams.forgive_deliveries), and the stage backs off
OUTAGE_BACKOFF_S before reading again. So an outage of any length sends nothing to the dead-letter
stream and fails no intent; its entries are claimed and handled once the dependency answers.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import RedisBatchStreamMessage as BatchMessage
from redis.exceptions import ResponseError

from channels import carries_psp_outcome
from consumers.context import Handler, StageContext
from ledger import LedgerUnavailableError
from pm.config import metrics
from pm.config.constants import (
    CLAIM_INTERVAL_S_MAX,
    CLAIM_ROUNDS_PER_LOOK_MAX,
    ENTRY_ERROR_KEY_PREFIX,
    ENTRY_ERROR_TTL_S,
    HAND_BACK_ENTRIES_MAX,
    OUTAGE_BACKOFF_S,
    OUTAGE_RETRY_AFTER_MS,
    SUBSCRIBER_CHECK_INTERVAL_S,
)
from pm.config.topology import Stage, Topology
from pm.domain.intent import TERMINAL_STATES, WAITING_STATES, Intent
from pm.redis import streams
from pm.redis.wire import redis_unavailable
from pm.store.intents import TransitionResult, apply_transitions
from pm.store.pool import database_unavailable

log = logging.getLogger("pm.consumers")

Entry = tuple[bytes, dict[bytes, bytes]]


def consumer_name(stage: Stage) -> str:
    """Unique per process: a restarted process is a new consumer; its old entries get claimed."""
    return f"{stage.name}-{socket.gethostname()}-{os.getpid()}"


def load_handler(stage: Stage) -> Handler:
    module = importlib.import_module(stage.handler)
    handler = getattr(module, "handle", None)
    assert callable(handler), f"{stage.handler} must define `async def handle(intents, context)`"
    return handler


def dependency_down(exc: BaseException) -> str | None:
    """Which dependency `exc` says is down ("ledger", "redis", "database"), or None for any other error."""
    if isinstance(exc, LedgerUnavailableError):  # before the database: it is an OSError too
        return "ledger"
    if redis_unavailable(exc):
        return "redis"
    if database_unavailable(exc):
        return "database"
    return None


class Subscriber(Protocol):
    """What the resubscriber needs of a FastStream subscriber (broker.subscriber's result)."""

    running: bool

    async def start(self) -> None: ...


@dataclass(slots=True)
class BatchOutcome:
    applied: int = 0
    stale: int = 0
    failed: int = 0
    malformed: int = 0
    # Set when a dependency was down: the batch's entries stay pending, this delivery not counted.
    dependency_down: str | None = None


class StageRunner:
    def __init__(self, stage: Stage, context: StageContext, handler: Handler | None = None) -> None:
        self.stage = stage
        self.context = context
        self.handler = handler or load_handler(stage)
        self.consumer = consumer_name(stage)
        self._in_flight: set[asyncio.Task[BatchOutcome]] = set()

    # -- one batch -----------------------------------------------------------------------------

    async def process(self, entries: list[Entry], redelivered: bool = False) -> BatchOutcome:
        """Handle one batch; shielded, so shutdown never cuts a batch between commit and ack (`drain`
        waits for it)."""
        task = asyncio.ensure_future(self._process(entries, redelivered))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(task)

    # -- shutdown --------------------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the batches in flight to commit and acknowledge; whether they all did."""
        if self._in_flight:
            _, running = await asyncio.wait(set(self._in_flight), timeout=max(timeout_s, 0.0))
            if running:
                log.error("a batch did not finish within the shutdown grace", extra={"stage": self.stage.name})
                return False
        return True

    async def hand_back(self) -> int:
        """Mark this consumer's pending entries idle for `claim_idle_ms`, so a live consumer of the group
        claims them at its next claim round (CLAIM_INTERVAL_S_MAX) instead of after `claim_idle_ms`: entries
        read but not finished (a read that returned as the subscriber stopped, a handler failure)."""
        stage = self.stage
        handed = await streams.hand_back(
            self.context.redis, stage.stream, stage.group, self.consumer,
            idle_ms=stage.claim_idle_ms, page_size=stage.batch_size, entries_max=HAND_BACK_ENTRIES_MAX,
        )  # fmt: skip
        if handed:
            log.warning("handed back pending entries", extra={"stage": stage.name, "entries": handed})
        return handed

    async def _process(self, entries: list[Entry], redelivered: bool) -> BatchOutcome:
        started_s = time.perf_counter()
        outcome = BatchOutcome()
        metrics.STAGE_BATCH_SIZE.labels(self.stage.name).observe(len(entries))
        intents, entry_ids, malformed = self._decode(entries)
        if malformed:
            outcome.malformed = len(malformed)
            await self._dead_letter([(entry_id, fields, error, 0) for entry_id, fields, error in malformed])

        try:
            transitions, failed_ids = await self._handle(intents, entry_ids)
            results = await apply_transitions(self.context.pool, transitions, {i.id: i for i in intents})
            publication = self._publication(results, redelivered)
            done_ids = [entry_id for entry_id in _flatten(entry_ids.values()) if entry_id not in failed_ids]
            await streams.publish_and_ack(
                self.context.redis, publication, self.stage.stream, self.stage.group, done_ids
            )
        except Exception as exc:
            outcome.dependency_down = dependency_down(exc)
            if outcome.dependency_down is None:
                raise
            await self._forgive(_flatten(entry_ids.values()), outcome.dependency_down, exc)
            return outcome
        outcome.failed = len(failed_ids)

        outcome.applied = sum(1 for r in results if r.applied)
        outcome.stale = len(results) - outcome.applied
        self._observe(results, outcome, time.perf_counter() - started_s)
        return outcome

    def _decode(
        self, entries: list[Entry]
    ) -> tuple[list[Intent], dict[object, list[bytes]], list[tuple[bytes, dict[bytes, bytes], str]]]:
        intents: dict[object, Intent] = {}
        entry_ids: dict[object, list[bytes]] = {}
        malformed = []
        for entry_id, fields in entries:
            try:
                intent = streams.decode_entry(fields)
            except (KeyError, ValueError, TypeError, AssertionError) as exc:
                malformed.append((entry_id, fields, f"malformed entry: {exc!r}"))
                continue
            # The same intent twice in a batch (a re-drive beside the original, a PSP's callback beside a
            # re-drive): handle it once, as the entry that carries a PSP's deciding outcome if one does.
            kept = intents.setdefault(intent.id, intent)
            if kept is not intent and carries_psp_outcome(intent) and not carries_psp_outcome(kept):
                intents[intent.id] = intent
            entry_ids.setdefault(intent.id, []).append(entry_id)
        return list(intents.values()), entry_ids, malformed

    async def _handle(self, intents: list[Intent], entry_ids: dict[object, list[bytes]]) -> tuple[list, set[bytes]]:
        if not intents:
            return [], set()
        try:
            return await self.handler(intents, self.context), set()
        except Exception as exc:
            if dependency_down(exc) is not None:
                raise  # the whole batch waits for the dependency: one by one would fail the same way
            if len(intents) == 1:
                await self._record_failure(intents, entry_ids)
                return [], set(entry_ids[intents[0].id])
            log.warning("batch failed; retrying its entries one by one", extra={"stage": self.stage.name})
        transitions, failed_ids = [], set()
        for intent in intents:
            try:
                transitions.extend(await self.handler([intent], self.context))
            except Exception as exc:
                if dependency_down(exc) is not None:
                    raise
                await self._record_failure([intent], entry_ids)
                failed_ids.update(entry_ids[intent.id])
        return transitions, failed_ids

    async def _record_failure(self, intents: list[Intent], entry_ids: dict[object, list[bytes]]) -> None:
        error = traceback.format_exc(limit=8)  # kept beside the entry: its dead letter's reason
        for intent in intents:
            # exc_info: the traceback goes wherever the log goes (pytest's captured log too).
            log.error(
                "handler failed; the entry stays pending and will be retried",
                exc_info=True,
                extra={"stage": self.stage.name, "intent_id": str(intent.id), "error": repr(sys.exc_info()[1])},
            )
        async with self.context.redis.pipeline(transaction=False) as pipe:
            for intent in intents:
                for entry_id in entry_ids[intent.id]:
                    pipe.set(self._error_key(entry_id), error[-4000:], ex=ENTRY_ERROR_TTL_S)
            await pipe.execute()

    async def _forgive(self, entry_ids: list[bytes], dependency: str, exc: BaseException) -> None:
        """Leave the batch pending without counting this delivery; it is claimed again soon."""
        stage = self.stage
        metrics.STAGE_OUTAGES.labels(stage.name, dependency).inc()
        log.warning(
            "a dependency is down; the batch stays pending and this delivery does not count",
            extra={"stage": stage.name, "dependency": dependency, "entries": len(entry_ids), "error": repr(exc)},
        )
        idle_ms = max(stage.claim_idle_ms - OUTAGE_RETRY_AFTER_MS, 0)
        try:
            await streams.forgive_deliveries(
                self.context.redis, stage.stream, stage.group, self.consumer, entry_ids, idle_ms
            )
        except redis.exceptions.RedisError as redis_exc:
            # Redis itself is down: the delivery counts (bounded by max_deliveries), nothing else to do.
            log.warning("could not forgive the deliveries", extra={"stage": stage.name, "error": repr(redis_exc)})

    def _error_key(self, entry_id: bytes) -> str:
        return f"{ENTRY_ERROR_KEY_PREFIX}{self.stage.group}:{entry_id.decode()}"

    def _publication(self, results: list[TransitionResult], redelivered: bool) -> streams.Publication:
        topology = self.context.topology
        entries: list[tuple[str, dict[str, bytes]]] = []
        for result in results:
            intent = result.intent
            if intent.state in TERMINAL_STATES:
                # The end of the pipeline: the outbox worker publishes its status message from its event
                # row and, in the same Redis call, adds it to the history stage's stream.
                continue
            if intent.state in WAITING_STATES:
                # Waits for its user: the confirmation (gateway) publishes it on; no stage reads it.
                continue
            if result.applied:
                entries.append((topology.stage_for_state(intent.state).stream, streams.entry_fields(intent)))
            elif redelivered and topology.stage_for_state(intent.state).name != self.stage.name:
                # A redelivered entry whose transition is already committed: the earlier attempt may
                # have died before publishing, so publish the intent onward again (handlers downstream
                # are idempotent; a duplicate costs one stale entry).
                entries.append((topology.stage_for_state(intent.state).stream, streams.entry_fields(intent)))
        return streams.Publication(entries=entries)

    def _observe(self, results: list[TransitionResult], outcome: BatchOutcome, elapsed_s: float) -> None:
        name = self.stage.name
        metrics.STAGE_BATCH_SECONDS.labels(name).observe(elapsed_s)
        for label, count in (
            ("applied", outcome.applied),
            ("stale", outcome.stale),
            ("failed", outcome.failed),
            ("malformed", outcome.malformed),
        ):
            if count:
                metrics.STAGE_MESSAGES.labels(name, label).inc(count)
        # Counted per final state, so a batch costs a labels() lookup per state, not per intent.
        finished: Counter[str] = Counter()
        end_to_end_s: dict[str, list[float]] = {}
        for result in results:
            intent = result.intent
            if result.applied and intent.state in TERMINAL_STATES:
                state = str(intent.state)
                finished[state] += 1
                if intent.created_at and intent.updated_at:
                    seconds = (intent.updated_at - intent.created_at).total_seconds()
                    end_to_end_s.setdefault(state, []).append(seconds)
                log.info("intent finished", extra={"stage": name, "intent_id": str(intent.id), "state": state})
        for state, count in finished.items():
            metrics.INTENTS_FINISHED.labels(state).inc(count)
        for state, seconds_list in end_to_end_s.items():
            histogram = metrics.INTENT_END_TO_END_SECONDS.labels(state)
            for seconds in seconds_list:
                histogram.observe(seconds)

    # -- orphaned entries ------------------------------------------------------------------------

    async def claim_once(self) -> int:
        """Claim entries idle past `claim_idle_ms`; dead-letter those delivered `max_deliveries` times.
        How many entries it took (0 also when the claimed batch met a dependency that is down)."""
        stage, redis = self.stage, self.context.redis
        pending = await streams.pending_idle(redis, stage.stream, stage.group, stage.claim_idle_ms, stage.batch_size)
        if not pending:
            return 0
        exhausted = [p for p in pending if p.deliveries >= stage.max_deliveries]
        if exhausted:
            await self._dead_letter_exhausted(exhausted)
        retry = [p.entry_id for p in pending if p.deliveries < stage.max_deliveries]
        claimed = await streams.claim(redis, stage.stream, stage.group, self.consumer, stage.claim_idle_ms, retry)
        if claimed:
            metrics.CLAIMED.labels(stage.name).inc(len(claimed))
            log.warning("claimed orphaned entries", extra={"stage": stage.name, "entries": len(claimed)})
            outcome = await self.process(claimed, redelivered=True)
            if outcome.dependency_down is not None:
                return 0  # nothing more to claim while it is down: the next look tries again
        return len(claimed) + len(exhausted)

    async def _dead_letter_exhausted(self, exhausted: list[streams.PendingEntry]) -> None:
        redis, stage = self.context.redis, self.stage
        async with redis.pipeline(transaction=False) as pipe:
            for pending in exhausted:
                pipe.xrange(stage.stream, min=pending.entry_id, max=pending.entry_id, count=1)
                pipe.get(self._error_key(pending.entry_id))
            replies = await pipe.execute()
        entries = []
        for index, pending in enumerate(exhausted):
            found, error = replies[2 * index], replies[2 * index + 1]
            fields = found[0][1] if found else {}
            reason = error.decode() if error else "delivered too often without being acknowledged"
            entries.append((pending.entry_id, fields, reason, pending.deliveries))
        await self._dead_letter(entries)

    async def _dead_letter(self, entries: list[tuple[bytes, dict[bytes, bytes], str, int]]) -> None:
        intent_ids = []
        for _, fields, _, _ in entries:
            try:
                intent_ids.append(streams.decode_entry(fields).id)
            except (KeyError, ValueError, TypeError, AssertionError):
                pass
        if intent_ids:
            # Flag first: an operator must see the intent even if the move below is retried.
            await self.context.pool.execute(
                "UPDATE pm.intent SET needs_operator = true WHERE id = ANY($1::uuid[])", intent_ids
            )
        await streams.dead_letter(
            self.context.redis,
            stream=self.stage.stream,
            group=self.stage.group,
            dead_letter_stream=self.stage.dead_letter_stream,
            entries=entries,
            entries_max=self.context.dead_letter_entries_max,
        )
        metrics.DEAD_LETTERS.labels(self.stage.name).inc(len(entries))
        for entry_id, _, error, deliveries in entries:
            log.error(
                "entry moved to the dead-letter stream",
                extra={"stage": self.stage.name, "entry_id": entry_id.decode(), "deliveries": deliveries,
                       "error": error[:500]},
            )  # fmt: skip

    async def claim_forever(self, stop: asyncio.Event | None = None) -> None:
        """Until `stop` is set (or the task is cancelled): look for orphaned entries every half claim-idle
        period, and claim on while rounds come back full (at most CLAIM_ROUNDS_PER_LOOK_MAX), so a large
        backlog of them (say, everything left pending by an outage) drains at the stage's own pace rather
        than one batch per look; at least every CLAIM_INTERVAL_S_MAX (entries handed back by a stopping
        consumer are idle already). Stopping by the event does not depend on a library letting a
        cancellation through."""
        stop = stop or asyncio.Event()
        interval_s = min(max(self.stage.claim_idle_ms / 2000, 0.05), CLAIM_INTERVAL_S_MAX)
        while not await wait_or_stop(stop, interval_s):
            for _ in range(CLAIM_ROUNDS_PER_LOOK_MAX):
                try:
                    taken = await self.claim_once()
                except Exception as exc:
                    raise_if_cancelling()
                    if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                        # Redis lost its data: keep_subscribed (and the poller) recreate the group. One line.
                        log.warning("no consumer group to claim from; retrying", extra={"stage": self.stage.name})
                    elif (dependency := dependency_down(exc)) is not None:
                        # An outage, not a bug: one line a round rather than a traceback (the batches'
                        # own outages are counted in pm_stage_dependency_outages_total).
                        log.warning(
                            "a dependency is down; claiming again next round",
                            extra={"stage": self.stage.name, "dependency": dependency, "error": repr(exc)},
                        )
                    else:
                        log.exception("claiming failed; retrying next round", extra={"stage": self.stage.name})
                    break
                if taken < self.stage.batch_size or stop.is_set():
                    break


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` is set first; whether to stop."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def raise_if_cancelling() -> None:
    """In an `except Exception` of a loop that runs until cancelled: if this task is being cancelled, end.

    A library may turn the CancelledError it received into another error (redis-py's connection code
    can); swallowing that and looping on would leave the task "cancelling" forever and hang shutdown."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _flatten(groups: object) -> list[bytes]:
    return [entry_id for group in groups for entry_id in group]  # type: ignore[attr-defined]


async def parse_batch(raw_message: dict) -> BatchMessage:
    """FastStream's message for a batch read, without a body: the stage decodes the raw entries itself
    (`entries_of`, StageRunner._decode). FastStream's own parser would JSON-encode the whole batch into a
    body nobody reads, after trying to JSON-decode each entry (an exception raised and caught per entry):
    measured about 5% of a stage process's CPU. No consumer to acknowledge with: FastStream never does
    (AckPolicy.MANUAL), the stage acknowledges with its publication (streams.publish_and_ack)."""
    return BatchMessage(raw_message=raw_message, body=b"", consumer=None, group=None)


def subscribe(broker: RedisBroker, runner: StageRunner) -> Subscriber:
    """Register the stage's batch subscriber on `broker` (FastStream reads, we acknowledge); returns it."""
    stage = runner.stage

    async def entries_of(message: BatchMessage) -> list[Entry]:
        """The batch as read (ids and field maps): our own decoding happens in `StageRunner`."""
        raw = message.raw_message
        return list(zip(raw["message_ids"], raw["data"], strict=True))

    async def on_batch(entries: list[Entry]) -> None:
        started_s = time.monotonic()
        try:
            outcome = await runner.process(entries)
        except Exception as exc:
            # FastStream (logger=None) would swallow it silently. The entries stay pending: claimed after
            # claim_idle_ms, or, when Redis lost them, re-driven from PostgreSQL by the status poller.
            log.error("batch failed; its entries stay pending", extra={"stage": stage.name, "error": repr(exc)})
        else:
            if outcome.dependency_down is not None:
                # Read nothing while the dependency is down, rather than fail batch after batch.
                await asyncio.sleep(OUTAGE_BACKOFF_S)
                return
        if len(entries) < stage.batch_size and stage.linger_ms:
            # Let the next batch fill: a stage with spare time would otherwise spend it (and the
            # machine's CPU) on many small batches, each paying its round trips and commit.
            rest_s = stage.linger_ms / 1000 - (time.monotonic() - started_s)
            if rest_s > 0:
                await asyncio.sleep(rest_s)

    subscriber = broker.subscriber(
        stream=StreamSub(
            stage.stream,
            group=stage.group,
            consumer=runner.consumer,
            batch=True,
            max_records=stage.batch_size,
            polling_interval=stage.block_ms,
        ),
        ack_policy=AckPolicy.MANUAL,
        parser=parse_batch,
        decoder=entries_of,
        title=f"{stage.name}",
    )
    subscriber(on_batch)
    return subscriber


async def keep_subscribed(
    redis: aioredis.Redis, topology: Topology, subscribers: list[tuple[Stage, Subscriber]], stop: asyncio.Event
) -> None:
    """Until `stop` is set: every SUBSCRIBER_CHECK_INTERVAL_S, restart each subscriber that stopped.

    FastStream stops a stream subscriber for good when its group is gone (NOGROUP: Redis restarted
    empty, or was flushed), without a word (logger=None) while the process runs on. Here the groups are
    recreated at id 0 (so entries the gateway, the poller or another stage wrote meanwhile are read) and
    the subscriber started again: it reads the new group from its start. Restarting before the group is
    there would make FastStream create it at `$`, past those entries: ensure_groups comes first."""
    while not await wait_or_stop(stop, SUBSCRIBER_CHECK_INTERVAL_S):
        stopped = [(stage, subscriber) for stage, subscriber in subscribers if not subscriber.running]
        if not stopped:
            continue
        try:
            created = await streams.ensure_groups(redis, topology)
            for stage, subscriber in stopped:
                if stop.is_set():
                    return
                await subscriber.start()
                metrics.RESUBSCRIBED.labels(stage.name).inc()
                log.error(
                    "the subscriber had stopped (its consumer group was gone: Redis lost its data?); subscribed again",
                    extra={"stage": stage.name, "groups_created": ",".join(created)},
                )
        except Exception:
            raise_if_cancelling()
            log.exception("resubscribing failed; retrying", extra={"stages": ",".join(s.name for s, _ in stopped)})
