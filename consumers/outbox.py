"""The outbox worker (`pm run outbox`): delivers, at least once, what state changes wrote in the same
statement as the change. Two loops:

- the feed (consumers/outbox_feed.py): every transition's event row becomes the app's status message on Redis
  pub/sub `intent.{id}`; a final one is also added to the history stage's stream, in the same Redis call
  (consumers/history.py then writes the users' history rows and ends the intent);
- the rows of `pm.outbox`, one delivery each with its own retries:
  - `merchant_webhook`: a MINIAPP intent's final state, POSTed to its merchant's registered URL
    (`pm merchants webhook set`) with `X-PM-Signature: t=<ts>,v1=<hex HMAC-SHA256(secret, "{t}." +
    body)>` (the PSPs' scheme, pm/domain/psp_signing.py) and `X-PM-Event-Id`, only to public addresses (or
    PM_WEBHOOK_ALLOWED_HOSTS) and never following a redirect (pm/webhooks/client.py);
  - `review`: an intent flagged for an operator (pm/store/reviews.py), added to the review stream
    (streams.yaml `review_stream`) for alerting.
  A receiver dedupes by `event_id` and orders by the intent's `version`, both in the body.

Per round: take up to `BATCH_MAX` due rows with FOR UPDATE SKIP LOCKED, lease them (so several workers
never send the same row at once, and a killed worker's rows come back after the lease), send them at
once, each bounded by `DELIVERY_TIMEOUT_S`; a 2xx marks the row delivered, anything else schedules a
retry with doubling backoff (1 s up to an hour) until `RETRY_WINDOW_S` (24 h) after the row was
written; then the row is given up and an operator looks (`pm outbox list`, `pm outbox retry ID`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
from aiohttp.abc import AbstractResolver
from redis.exceptions import RedisError

from consumers.outbox_feed import FEED_BATCH_MAX, feed_once
from pm.config import metrics
from pm.config.topology import Topology
from pm.domain import psp_signing
from pm.domain.webhook_policy import AllowedHosts
from pm.webhooks.client import WebhookClient

log = logging.getLogger("pm.outbox")

BATCH_MAX = 100
LEASE_S = 60
DELIVERY_TIMEOUT_S = 10.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 3_600.0
RETRY_WINDOW_S = 24 * 3_600
IDLE_WAIT_S = 0.5
# A feed round starts at most this often unless the last one was full: under load, rounds of a few hundred
# events (one transaction each) instead of a round per handful; the most a status message waits extra.
FEED_LINGER_S = 0.025
# Another worker holds the feed: look again this much later (it takes over if that worker dies).
FEED_STANDBY_WAIT_S = 1.0
# A failed round (PostgreSQL or Redis away, or an event the feed cannot deliver) is tried again this much
# later, in order: the feed never skips an event; pm_outbox_feed_failures_total and the log say why it waits.
FEED_RETRY_WAIT_S = 1.0
REVIEW_STREAM_LENGTH_MAX = 10_000
ERROR_LENGTH_MAX = 500
SIGNATURE_HEADER = "X-PM-Signature"
EVENT_ID_HEADER = "X-PM-Event-Id"

_TAKE_SQL = """
UPDATE pm.outbox o SET next_attempt_at = now() + make_interval(secs => $2), attempts = o.attempts + 1
WHERE o.id IN (
    SELECT id FROM pm.outbox
    WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING o.id, o.kind, o.event_id, o.payload, o.attempts, o.created_at, o.merchant_id,
          (SELECT url FROM pm.merchant_webhook w WHERE w.merchant_id = o.merchant_id) AS url,
          (SELECT secret FROM pm.merchant_webhook w WHERE w.merchant_id = o.merchant_id) AS secret
"""
_DELIVERED_SQL = "UPDATE pm.outbox SET delivered_at = now(), last_error = NULL WHERE id = ANY($1::bigint[])"
_RETRY_SQL = """
UPDATE pm.outbox o SET
    last_error = u.error,
    next_attempt_at = now() + make_interval(secs => u.backoff_s),
    gave_up_at = CASE WHEN o.created_at + make_interval(secs => $4) <= now() THEN now() END
FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS u(id, error, backoff_s)
WHERE o.id = u.id
"""


@dataclass(frozen=True, slots=True)
class RoundResult:
    delivered: int
    failed: int


def backoff_s(attempts: int) -> float:
    """1 s after the first failure, doubling, at most an hour."""
    assert attempts >= 1
    return min(BACKOFF_FIRST_S * 2 ** (attempts - 1), BACKOFF_MAX_S)


@dataclass(frozen=True, slots=True)
class Receivers:
    """Where outbox rows go: merchants' backends over HTTP, the review stream on Redis."""

    webhooks: WebhookClient
    redis: aioredis.Redis
    topology: Topology


async def deliver_once(pool: asyncpg.Pool, receivers: Receivers) -> RoundResult:
    rows = await pool.fetch(_TAKE_SQL, BATCH_MAX, float(LEASE_S))
    if not rows:
        return RoundResult(0, 0)
    results = await asyncio.gather(*(_deliver(receivers, row) for row in rows))
    delivered = [row["id"] for row, error in zip(rows, results, strict=True) if error is None]
    failed = [(row, error) for row, error in zip(rows, results, strict=True) if error is not None]
    if delivered:
        await pool.execute(_DELIVERED_SQL, delivered)
    if failed:
        await pool.execute(
            _RETRY_SQL,
            [row["id"] for row, _ in failed],
            [error[:ERROR_LENGTH_MAX] for _, error in failed],
            [backoff_s(row["attempts"]) for row, _ in failed],
            float(RETRY_WINDOW_S),
        )
        for row, error in failed:
            metrics.OUTBOX_FAILED.labels(row["kind"]).inc()
            log.warning(
                "outbox row not delivered; retrying",
                extra={"kind": row["kind"], "event_id": str(row["event_id"]), "error": error},
            )
    for row, error in zip(rows, results, strict=True):
        if error is None:
            metrics.OUTBOX_DELIVERED.labels(row["kind"]).inc()
    return RoundResult(len(delivered), len(failed))


def _body(row: asyncpg.Record) -> bytes:
    payload = row["payload"]
    return orjson.dumps(
        {"event_id": str(row["event_id"]), **(orjson.loads(payload) if isinstance(payload, str) else payload)}
    )


async def _deliver(receivers: Receivers, row: asyncpg.Record) -> str | None:
    """None when delivered; else why not."""
    if row["kind"] == "review":
        try:
            await receivers.redis.xadd(
                receivers.topology.review_stream,
                {"event_id": str(row["event_id"]), "event": _body(row)},
                maxlen=REVIEW_STREAM_LENGTH_MAX,
                approximate=True,
            )
        except RedisError as exc:
            return repr(exc)
        return None
    assert row["kind"] == "merchant_webhook", row["kind"]
    return await _send_webhook(receivers.webhooks, row)


async def _send_webhook(webhooks: WebhookClient, row: asyncpg.Record) -> str | None:
    """None when the receiver answered 2xx; else why not."""
    if row["url"] is None:
        return f"merchant {row['merchant_id']} has no webhook URL (pm merchants webhook set)"
    body = _body(row)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: psp_signing.sign(row["secret"], body, int(time.time())),
        EVENT_ID_HEADER: str(row["event_id"]),
    }
    return await webhooks.post(row["url"], body, headers)


def webhook_client(allowed_hosts: AllowedHosts, resolver: AbstractResolver | None = None) -> WebhookClient:
    """The worker's webhook client: a round's deliveries at once, each bounded by DELIVERY_TIMEOUT_S."""
    return WebhookClient(allowed_hosts, DELIVERY_TIMEOUT_S, connections_max=BATCH_MAX, resolver=resolver)


async def run_outbox(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    topology: Topology,
    stop: asyncio.Event | None = None,
    allowed_hosts: AllowedHosts | None = None,
    shutdown_grace_s: float = 10.0,
) -> None:
    """Run the feed and the row deliveries until `stop` is set (or cancelled). `allowed_hosts`
    (PM_WEBHOOK_ALLOWED_HOSTS): internal hosts webhooks may reach anyway; none by default.

    Cancelled (SIGTERM), the loops are asked to stop and their rounds in flight get `shutdown_grace_s`
    (PM_SHUTDOWN_GRACE_S) to finish, so leased rows are delivered and marked instead of waiting out their
    LEASE_S; what is still running then is cancelled (a feed round rolls back: delivered again, same event ids)."""
    stop = stop or asyncio.Event()
    webhooks = webhook_client(allowed_hosts or AllowedHosts())
    receivers = Receivers(webhooks, redis, topology)
    loops = [
        asyncio.create_task(_feed_loop(pool, redis, topology, stop), name="outbox-feed"),
        asyncio.create_task(_rows_loop(pool, receivers, stop), name="outbox-rows"),
    ]
    try:
        # asyncio.wait, not gather: a cancellation of this task must not cancel the loops mid-round.
        done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # a loop that raised (a bug: they catch per round) ends the worker
    finally:
        stop.set()
        _, running = await asyncio.wait(loops, timeout=shutdown_grace_s)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=DELIVERY_TIMEOUT_S)
        await webhooks.close()


async def _feed_loop(pool: asyncpg.Pool, redis: aioredis.Redis, topology: Topology, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started_s = loop.time()
        try:
            result = await feed_once(pool, redis, topology)
            if result.locked_out:
                wait_s = FEED_STANDBY_WAIT_S
            elif result.events >= FEED_BATCH_MAX:
                wait_s = 0.0  # behind: the next round at once
            else:
                wait_s = started_s + FEED_LINGER_S - loop.time()
        except Exception as exc:  # the feed must outlive any one round; it retries in order
            metrics.OUTBOX_FEED_FAILURES.inc()
            log.error("outbox feed round failed; retrying", exc_info=True, extra={"error": repr(exc)})
            wait_s = FEED_RETRY_WAIT_S
        if wait_s > 0:
            await _wait(stop, wait_s)


async def _rows_loop(pool: asyncpg.Pool, receivers: Receivers, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            result = await deliver_once(pool, receivers)
        except Exception as exc:  # a bad round must not stop the worker; its rows stay due
            log.error("outbox round failed; retrying", exc_info=True, extra={"error": repr(exc)})
            result = RoundResult(0, 0)
        if result.delivered + result.failed == 0:
            await _wait(stop, IDLE_WAIT_S)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def set_webhook(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: int, url: str, secret: str) -> None:
    await conn.execute(
        "INSERT INTO pm.merchant_webhook (merchant_id, url, secret) VALUES ($1, $2, $3)"
        " ON CONFLICT (merchant_id) DO UPDATE SET url = $2, secret = $3, updated_at = now()",
        merchant_id,
        url,
        secret,
    )


async def list_rows(
    conn: asyncpg.Connection | asyncpg.Pool, undelivered_only: bool, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, kind, event_id, intent_id, version, merchant_id, attempts, next_attempt_at, delivered_at,"
        " gave_up_at, last_error FROM pm.outbox WHERE NOT $1 OR delivered_at IS NULL ORDER BY id DESC LIMIT $2",
        undelivered_only,
        min(max(limit, 1), 1_000),
    )
    return [dict(row) for row in rows]


async def retry(conn: asyncpg.Connection | asyncpg.Pool, row_id: int) -> bool:
    """Send an undelivered row again now (also one given up); False when there is no such row."""
    status = await conn.execute(
        "UPDATE pm.outbox SET next_attempt_at = now(), gave_up_at = NULL, created_at = now()"
        " WHERE id = $1 AND delivered_at IS NULL",
        row_id,
    )
    return status.endswith(" 1")
