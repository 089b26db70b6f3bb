"""The status poller: PostgreSQL is the truth, Redis is transport (DESIGN.md §5).

Every round it
- re-drives intents left in a stage's input state longer than that stage's `stuck_after_s` by
  publishing their entry again — after a lost entry, a crash, or a Redis that lost its data; handlers
  are idempotent, so a duplicate is harmless (a final intent not yet `finished` goes to the history
  stage, whose input states are the final ones: the outbox feed adds it there once, this catches a lost
  entry; a dead-lettered one, flagged `needs_operator`, is an operator's: `pm dlq replay`);
- asks the PSPs about payments voided at their deadline until they answer finally (consumers/psp_watch.py);
- recreates missing consumer groups (a Redis that restarted empty);
- notices that Redis lost its data (the topology's `data_marker` key is gone: SET NX answers yes) and
  then recovers: every unfinished intent (final ones not `finished` too, to the history stage) is
  re-driven at once, whatever its `stuck_after_s`, in rounds of `batch_size` per stage, and the review
  events are announced again on the (lost) review stream;
- trims every stream below what all its groups have acknowledged (never an unread entry);
- deletes consumers idle past PM_STREAM_CONSUMER_PRUNE_IDLE_S with nothing pending (every process is a
  new consumer, so restarts leave dead ones in each group), a bounded number per stage per round;
- deletes idempotency records past PM_IDEMPOTENCY_RETENTION_S, request nonces past their window,
  delivered outbox rows past PM_WEBHOOK_RETENTION_S and PSP callback events past
  PM_PSP_EVENT_RETENTION_S, in bounded rounds (intents and their event rows are kept: the record);
- measures stream backlogs, dead-letter stream lengths and open intents for the metrics;
- every PM_LEDGER_CHECK_INTERVAL_S, checks the ledger as `pm ledger check --allow-pending-transit` does
  (bounded: LEDGER_CHECK_PAGES_MAX pages of accounts, ledger.check.SCANS_MAX scans) and exports transit
  balances, problems found and imbalances it could not confirm under traffic (inconclusive);
- every PM_BALANCE_SNAPSHOT_INTERVAL_S, snapshots every account's balances into
  pm.account_balance_snapshot (consumers/balance_snapshot.py: bounded pages, one short statement each).
One poller is enough; several are safe (rows are taken with SKIP LOCKED, re-drives are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import asyncpg

from consumers import confirmations, psp_watch
from consumers.balance_snapshot import Snapshots, snapshot_once
from consumers.context import StageContext
from consumers.outbox import REVIEW_STREAM_LENGTH_MAX
from consumers.runtime import raise_if_cancelling, wait_or_stop
from ledger.accounts import CURRENCY_LEDGER
from ledger.check import CheckReport, run_check
from pm.config import metrics
from pm.config.constants import (
    CONSUMER_PRUNE_INTERVAL_S,
    CONSUMER_PRUNE_ROUND_MAX,
    LEDGER_CHECK_PAGES_MAX,
    NONCE_TTL_S,
    PURGE_INTERVAL_S,
    PURGE_ROUND_ROWS_MAX,
    PURGE_ROUNDS_MAX,
    REPORTS_LOOK_S,
)
from pm.config.topology import Stage
from pm.domain.intent import TERMINAL_STATE_NAMES, TERMINAL_STATES, State
from pm.redis import streams
from pm.redis.streams import dead_letter_lengths
from pm.store import retention, reviews
from pm.store.intents import INTENT_COLUMNS, intent_from_row

log = logging.getLogger("pm.poller")

# After Redis lost its data: every unfinished intent of the stage's input states not re-driven since the
# loss was noticed ($2, the database's clock then), at once. Rounds go on until one comes back short.
_RECOVER_SQL = f"""
UPDATE pm.intent SET redriven_at = clock_timestamp()
WHERE id IN (
    SELECT id FROM pm.intent
    WHERE NOT finished
      AND NOT needs_operator
      AND state = ANY($1::text[])
      AND (redriven_at IS NULL OR redriven_at < $2)
    ORDER BY created_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING {INTENT_COLUMNS}
"""

_REDRIVE_SQL = f"""
UPDATE pm.intent SET redriven_at = clock_timestamp()
WHERE id IN (
    SELECT id FROM pm.intent
    WHERE NOT finished  -- the unfinished ones, from the partial index intent_unfinished
      -- An intent changed before its stuck_after_s was created before it too (created_at <= updated_at:
      -- both from the database's clock, a transition after the insert): this bound is the index's range,
      -- so a round reads only the unfinished intents older than stuck_after_s, not every one in flight
      -- (under load thousands, each read from the heap, in every round for every stage). now(), not
      -- clock_timestamp(): a volatile function cannot bound an index scan.
      AND created_at < now() - make_interval(secs => $2)
      -- A dead-lettered intent waits for an operator (`pm dlq replay`): re-driving it would loop it
      -- through max_deliveries failures and the dead-letter stream again every stuck_after_s, forever.
      AND NOT needs_operator
      AND state = ANY($1::text[])
      AND updated_at < clock_timestamp() - make_interval(secs => $2)
      AND (redriven_at IS NULL OR redriven_at < clock_timestamp() - make_interval(secs => $2))
    ORDER BY created_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING {INTENT_COLUMNS}
"""


# Open intents by state; how long the least recently changed one not waiting for an operator has stayed
# as it is; and the flagged ones, counted and aged on their own (alert PmIntentsNeedOperator). Open
# intents are unfinished (finishing comes after the end): the partial index intent_unfinished serves this.
_OPEN_INTENTS_SQL = """
SELECT state, count(*) AS n,
       extract(epoch FROM clock_timestamp() - min(updated_at) FILTER (WHERE NOT needs_operator)) AS oldest_s,
       count(*) FILTER (WHERE needs_operator) AS flagged,
       extract(epoch FROM clock_timestamp() - min(updated_at) FILTER (WHERE needs_operator)) AS flagged_oldest_s
FROM pm.intent
WHERE NOT finished AND state <> ALL($1::text[])
GROUP BY state
"""


async def redrive_stage(context: StageContext, stage: Stage, limit: int) -> int:
    rows = await context.pool.fetch(
        _REDRIVE_SQL, [str(s) for s in stage.input_states], float(stage.stuck_after_s), limit
    )
    return await _publish_redriven(context, stage, rows)


async def _publish_redriven(context: StageContext, stage: Stage, rows: list[asyncpg.Record]) -> int:
    if not rows:
        return 0
    intents = [intent_from_row(row) for row in rows]
    async with context.redis.pipeline(transaction=False) as pipe:
        for intent in intents:
            pipe.xadd(stage.stream, streams.entry_fields(intent))
        await pipe.execute()
    for intent in intents:
        metrics.REDRIVEN.labels(str(intent.state)).inc()
        log.warning("re-driven", extra={"intent_id": str(intent.id), "state": str(intent.state), "stage": stage.name})
    return len(intents)


async def redrive_once(context: StageContext) -> int:
    limit = context.topology.poller.batch_size
    return sum([await redrive_stage(context, stage, limit) for stage in context.topology.stages.values()])


@dataclass(slots=True)
class Recovery:
    """After Redis lost its data: re-drive every unfinished intent not re-driven `since` (the database's
    clock when the loss was noticed), and announce the review events again."""

    since: datetime
    reviews_reannounced: bool = False


async def notice_data_loss(context: StageContext) -> Recovery | None:
    """A Recovery when Redis lost its data (its marker is gone; or Redis is new), after setting the marker."""
    marker = f"set by {socket.gethostname()}-{os.getpid()} at {datetime.now(UTC).isoformat()}"
    if not await streams.mark_data_present(context.redis, context.topology, marker):
        return None
    # The database's clock, which stamps `redriven_at`: intents re-driven after this need not be again.
    since = await context.pool.fetchval("SELECT clock_timestamp()")
    metrics.REDIS_DATA_LOST.inc()
    log.warning(
        "Redis holds no data marker: it lost its data (or is new); re-driving every unfinished intent",
        extra={"marker": context.topology.data_marker},
    )
    return Recovery(since)


async def recover_once(context: StageContext, recovery: Recovery) -> bool:
    """One round: the review events again (once), then per stage up to `batch_size` unfinished intents not
    re-driven since the loss; whether the recovery is done (every stage's round came back short)."""
    if not recovery.reviews_reannounced:
        reannounced = await reviews.reannounce(context.pool, REVIEW_STREAM_LENGTH_MAX)
        recovery.reviews_reannounced = True
        log.warning("review events announced again", extra={"events": reannounced})
    limit = context.topology.poller.batch_size
    done = True
    for stage in context.topology.stages.values():
        if not stage.input_states:
            continue  # a PSP connector: its intents are CLEARED, re-driven through dispatch
        rows = await context.pool.fetch(_RECOVER_SQL, [str(s) for s in stage.input_states], recovery.since, limit)
        await _publish_redriven(context, stage, rows)
        done = done and len(rows) < limit
    return done


async def trim_once(context: StageContext) -> int:
    removed = 0
    for stage in context.topology.stages.values():
        removed += await streams.trim_acknowledged(context.redis, stage.stream, [stage.group])
    return removed


async def prune_consumers_once(context: StageContext, round_max: int = CONSUMER_PRUNE_ROUND_MAX) -> int:
    """Delete every stage's consumers idle past `consumer_prune_idle_s` with nothing pending (at most
    `round_max` per stage; the rest wait for the next round). Returns how many were deleted."""
    idle_ms = int(context.consumer_prune_idle_s * 1000)
    deleted = 0
    for stage in context.topology.stages.values():
        names = await streams.prune_idle_consumers(context.redis, stage.stream, stage.group, idle_ms, round_max)
        if names:
            metrics.CONSUMERS_PRUNED.labels(stage.name).inc(len(names))
            log.info("pruned idle consumers", extra={"stage": stage.name, "consumers": names[:10], "count": len(names)})
        deleted += len(names)
    return deleted


class Purged(NamedTuple):
    """Rows one purge run deleted, per table."""

    idempotency: int
    nonces: int
    outbox: int
    psp_events: int


async def purge_once(
    context: StageContext, round_rows_max: int = PURGE_ROUND_ROWS_MAX, rounds_max: int = PURGE_ROUNDS_MAX
) -> Purged:
    """Delete what is past its retention: rounds of at most `round_rows_max` rows per table until a round
    comes back short, at most `rounds_max` rounds each (what is left waits for the next run)."""
    deleted = []
    for purge, retention_s in (
        (retention.purge_idempotency, context.idempotency_retention_s),
        (retention.purge_nonces, float(NONCE_TTL_S)),
        (retention.purge_delivered_outbox, context.webhook_retention_s),
        (retention.purge_psp_events, context.psp_event_retention_s),
    ):
        total = 0
        for _ in range(rounds_max):
            count = await purge(context.pool, retention_s, round_rows_max)
            total += count
            if count < round_rows_max:
                break
        deleted.append(total)
    purged = Purged(*deleted)
    if any(purged):
        log.info("purged expired records", extra=purged._asdict())
    return purged


async def measure_once(context: StageContext) -> None:
    for stage in context.topology.stages.values():
        backlog = await streams.backlog(context.redis, stage.stream, stage.group)
        if backlog is not None:
            metrics.STREAM_BACKLOG.labels(stage.stream, stage.group).set(backlog.lag)
            metrics.STREAM_PENDING.labels(stage.stream, stage.group).set(backlog.pending)
    for name, length in (await dead_letter_lengths(context.redis, context.topology)).items():
        metrics.DEAD_LETTER_ENTRIES.labels(name).set(length)
    rows = await context.pool.fetch(_OPEN_INTENTS_SQL, list(TERMINAL_STATE_NAMES))
    by_state = {row["state"]: row for row in rows}
    for state in State:
        if state not in TERMINAL_STATES:
            row = by_state.get(str(state))
            metrics.OPEN_INTENTS.labels(str(state)).set(row["n"] if row else 0)
            metrics.OPEN_INTENT_OLDEST_SECONDS.labels(str(state)).set(_seconds(row, "oldest_s"))
            metrics.NEEDS_OPERATOR_INTENTS.labels(str(state)).set(row["flagged"] if row else 0)
            metrics.NEEDS_OPERATOR_OLDEST_SECONDS.labels(str(state)).set(_seconds(row, "flagged_oldest_s"))


def _seconds(row: asyncpg.Record | None, column: str) -> float:
    value = row[column] if row is not None else None
    return max(float(value), 0.0) if value is not None else 0.0


async def check_ledger_once(context: StageContext, pages_max: int = LEDGER_CHECK_PAGES_MAX) -> CheckReport | None:
    """The ledger check, for the metrics the alerts read; None (counted, logged) when it cannot complete."""
    try:
        report = await run_check(context.ledger, allow_pending_transit=True, pages_max=pages_max)
    except Exception:
        raise_if_cancelling()
        metrics.LEDGER_CHECK_FAILURES.inc()
        log.exception("ledger check could not complete; run `pm ledger check` by hand")
        return None
    export_ledger_check(report)
    if report.problems:
        log.error("ledger check found problems", extra={"problems": report.problems[:20]})
    if report.inconclusive:
        log.warning(
            "ledger check could not confirm or rule out an imbalance: transfers between every two scans",
            extra={"inconclusive": report.inconclusive[:20], "scans": report.scans},
        )
    return report


def export_ledger_check(report: CheckReport) -> None:
    currency_of = {number: code for code, number in CURRENCY_LEDGER.items()}
    seen = {currency_of.get(balance.ledger, str(balance.ledger)): balance for balance in report.transit}
    for currency in (*CURRENCY_LEDGER, *(c for c in seen if c not in CURRENCY_LEDGER)):
        balance = seen.get(currency)
        metrics.LEDGER_TRANSIT_MINOR.labels(currency, "posted").set(balance.posted_net if balance else 0)
        metrics.LEDGER_TRANSIT_MINOR.labels(currency, "pending").set(balance.pending_net if balance else 0)
    metrics.LEDGER_CHECK_PROBLEMS.set(len(report.problems))
    metrics.LEDGER_CHECK_INCONCLUSIVE.set(len(report.inconclusive))
    metrics.LEDGER_CHECK_TIMESTAMP_SECONDS.set(time.time())


async def run_poller(context: StageContext, stop: asyncio.Event | None = None) -> None:
    """Until `stop` is set (or cancelled): one round per `interval_ms`, trims and measures on their own periods;
    beside them, the reports (the ledger check, the balance snapshot), which read the whole ledger in pages
    and may take long on a large one: in a loop of their own, so that re-drives, PSP deadlines and the
    notice of a Redis data loss never wait for them."""
    stop = stop or asyncio.Event()
    await asyncio.gather(_run_rounds(context, stop), _run_reports(context, stop))


async def _run_reports(context: StageContext, stop: asyncio.Event) -> None:
    last_ledger_check_s: float | None = None
    last_snapshot_s: float | None = None
    snapshots = Snapshots()  # where the next balance snapshot goes on (a ledger larger than one run's pages)
    while not stop.is_set():
        started_s = time.monotonic()
        try:
            check_every_s = context.ledger_check_interval_s
            if check_every_s > 0 and (last_ledger_check_s is None or started_s - last_ledger_check_s >= check_every_s):
                last_ledger_check_s = started_s  # a failed check waits for its next period too
                await check_ledger_once(context)
            snapshot_every_s = context.balance_snapshot_interval_s
            if snapshot_every_s > 0 and (last_snapshot_s is None or started_s - last_snapshot_s >= snapshot_every_s):
                last_snapshot_s = started_s  # a failed run waits for its next period too
                await snapshot_once(context.ledger, context.pool, snapshots)
        except Exception:
            raise_if_cancelling()
            log.exception("poller report failed; retrying on its next period")
        await wait_or_stop(stop, REPORTS_LOOK_S)


async def _run_rounds(context: StageContext, stop: asyncio.Event) -> None:
    config = context.topology.poller
    last_trim_s = last_measure_s = last_purge_s = last_prune_s = 0.0
    recovery: Recovery | None = None  # Redis lost its data: re-driving everything
    while not stop.is_set():
        started_s = time.monotonic()
        try:
            await streams.ensure_groups(context.redis, context.topology)
            recovery = await notice_data_loss(context) or recovery
            if recovery is not None and await recover_once(context, recovery):
                log.warning("recovered from the loss of Redis's data: every unfinished intent re-driven")
                recovery = None
            await redrive_once(context)
            await confirmations.expire_once(context)
            if context.psp is not None:
                await psp_watch.check_due(context.pool, context.psp)
            if started_s - last_trim_s >= config.trim_interval_ms / 1000:
                await trim_once(context)
                last_trim_s = started_s
            if started_s - last_purge_s >= PURGE_INTERVAL_S:
                await purge_once(context)
                last_purge_s = started_s
            if started_s - last_prune_s >= CONSUMER_PRUNE_INTERVAL_S:
                await prune_consumers_once(context)
                last_prune_s = started_s
            if started_s - last_measure_s >= config.lag_interval_ms / 1000:
                await measure_once(context)
                last_measure_s = started_s
        except Exception:
            raise_if_cancelling()
            log.exception("poller round failed; retrying next round")
        await wait_or_stop(stop, max(0.0, config.interval_ms / 1000 - (time.monotonic() - started_s)))
