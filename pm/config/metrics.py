"""Prometheus metrics of the pipeline processes (the gateway's HTTP metrics are in gateway/metrics.py).

Each process serves its own registry: `/metrics` on the gateway, or `serve_metrics(port)` for a stage
process (honcho gives each process a `$PORT`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

STAGE_MESSAGES = Counter(
    "pm_stage_messages_total",
    "Stream entries handled by a stage, by outcome "
    "(applied: transition made; stale: intent had moved on; failed: handler error; dead_lettered; malformed)",
    ["stage", "outcome"],
)
STAGE_BATCH_SECONDS = Histogram(
    "pm_stage_batch_seconds",
    "Time to handle one batch: handler, SQL, publish and ack",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STAGE_BATCH_SIZE = Histogram(
    "pm_stage_batch_entries",
    "Entries per batch read by a stage",
    ["stage"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8189),
)
INTENTS_FINISHED = Counter("pm_intents_finished_total", "Intents that reached a final state", ["state"])
INTENT_END_TO_END_SECONDS = Histogram(
    "pm_intent_end_to_end_seconds",
    "From the intent's creation (POST /intents) to its final transition (the compare-and-set's time)",
    ["state"],
    # Up to the PSP outcome deadline (600 s by default) and the hold (900 s): a payout may take that long.
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900),
)
DEAD_LETTERS = Counter("pm_dead_letters_total", "Entries moved to a dead-letter stream", ["stage"])
DEAD_LETTER_ENTRIES = Gauge(
    "pm_dead_letter_entries",
    "Entries in a stage's dead-letter stream (status poller; capped by PM_DEAD_LETTER_STREAM_ENTRIES_MAX)",
    ["stage"],
)
STAGE_OUTAGES = Counter(
    "pm_stage_dependency_outages_total",
    "Batches a stage left pending, their delivery not counted, because a dependency (database, redis, ledger) was down",
    ["stage", "dependency"],
)
RESUBSCRIBED = Counter(
    "pm_stage_resubscribed_total", "Stage subscribers started again after their group was gone", ["stage"]
)
CLAIMED = Counter("pm_stage_claimed_total", "Entries claimed from consumers that stopped answering", ["stage"])
LEDGER_RESULTS = Counter("pm_ledger_results_total", "Ledger results by operation and status", ["operation", "status"])
LEDGER_REQUEST_EVENTS = Histogram(
    "pm_ledger_request_events",
    "Events per ledger request (how well the stages batch)",
    ["operation"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8189),
)
STREAM_BACKLOG = Gauge("pm_stream_backlog_entries", "Entries not yet delivered to the group", ["stream", "group"])
STREAM_PENDING = Gauge("pm_stream_pending_entries", "Entries delivered, not yet acknowledged", ["stream", "group"])
CONSUMERS_PRUNED = Counter(
    "pm_stream_consumers_pruned_total", "Idle consumers with nothing pending deleted by the poller", ["stage"]
)
REDRIVEN = Counter("pm_poller_redriven_total", "Intents re-published by the status poller", ["state"])
REDIS_DATA_LOST = Counter(
    "pm_poller_redis_data_lost_total", "Times the status poller found Redis without its data marker and recovered"
)
OPEN_INTENTS = Gauge("pm_intents_open", "Intents not yet final, by state (status poller)", ["state"])
OPEN_INTENT_OLDEST_SECONDS = Gauge(
    "pm_intent_open_oldest_seconds",
    "Seconds since the least recently changed open intent of a state changed, not counting intents flagged for "
    "an operator (status poller; 0: none)",
    ["state"],
)
# Flagged intents wait for an operator whatever the dead-letter streams still hold (a flush, `pm dlq drop`
# or trimming can empty those while the intent stays flagged and, for a PSP payment, its hold runs out).
NEEDS_OPERATOR_INTENTS = Gauge(
    "pm_intents_needs_operator",
    "Open intents flagged for an operator (never re-driven), by state (status poller)",
    ["state"],
)
NEEDS_OPERATOR_OLDEST_SECONDS = Gauge(
    "pm_intent_needs_operator_oldest_seconds",
    "Seconds since the least recently changed open intent flagged for an operator changed, by state (0: none)",
    ["state"],
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose this process's metrics on http://host:port/metrics (a daemon thread)."""
    start_http_server(port, addr=host)


# Issue 12: per-key rates. Labelled by key id: only keys whose signature verified are counted, so the
# label's values are the keys operators made (pm.api_key), never made-up ids.
RATE_LIMITED = Counter(
    "pm_rate_limited_total",
    "Signed requests the gateway refused with 429 RATE_LIMITED: the key was over its rate (requests_per_s)",
    ["key_id"],
)
REQUEST_BODY_TIMEOUTS = Counter(
    "pm_request_body_timeouts_total",
    "Requests refused with 408 REQUEST_TIMEOUT: the body did not arrive within PM_REQUEST_BODY_TIMEOUT_MS",
)

# Issue 5: PSPs.
REVIEWS_FLAGGED = Counter(
    "pm_reviews_flagged_total", "Intents flagged for an operator: a PSP paid out what the wallet had failed"
)
PSP_CALLBACKS = Counter(
    "pm_psp_callbacks_total", "PSP callbacks by channel and what became of them", ["channel", "outcome"]
)
# Issue 5: the outbox worker.
OUTBOX_DELIVERED = Counter(
    "pm_outbox_delivered_total",
    "Deliveries of the outbox worker by kind: status, merchant_webhook, review",
    ["kind"],
)
HISTORY_ROWS = Counter(
    "pm_history_rows_total",
    "Users' history rows the history stage wrote (pm.history; a replayed intent's rows exist already)",
)
OUTBOX_FAILED = Counter("pm_outbox_failed_total", "Outbox deliveries that failed and will be retried", ["kind"])
OUTBOX_FEED_DELAY_SECONDS = Gauge(
    "pm_outbox_feed_delay_seconds",
    "Age of the oldest event the feed delivered last round, or of the oldest one held back (0: caught up)",
)
OUTBOX_FEED_FAILURES = Counter("pm_outbox_feed_failures_total", "Feed rounds that failed and will be tried again")
# Issue 12: what the dashboard (ops/grafana/pm.json) and the alerts (ops/prometheus/alerts.yml) read.
LEDGER_REQUEST_SECONDS = Histogram(
    "pm_ledger_request_seconds",
    "Time of one ledger request from a stage, by operation (TigerBeetle: about 2 ms, full batch or not)",
    ["operation"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PSP_CALLS = Counter(
    "pm_psp_calls_total",
    "Calls to a PSP by provider, operation (submit, status) and outcome (ok, not_found; errors: http_5xx, refused, "
    "timeout, connection, bad_answer, reference_reused, cancelled, error)",
    ["provider", "operation", "outcome"],
)
PSP_CALL_SECONDS = Histogram(
    "pm_psp_call_seconds",
    "Time of one call to a PSP, answered or not, by provider and operation",
    ["provider", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LEDGER_TRANSIT_MINOR = Gauge(
    "pm_ledger_transit_minor",
    "Net balance of each transit account at the status poller's last ledger check, in minor units, by "
    "currency and balance (posted: must be 0 always; pending: holds of intents in flight)",
    ["currency", "balance"],
)
# Unlabelled, so every process exports them (as 0): 0 problems is the healthy value, and the alerts read
# the timestamp as max() over the fleet, where only the poller's is not 0.
LEDGER_CHECK_PROBLEMS = Gauge(
    "pm_ledger_check_problems", "Problems the status poller's last ledger check found (pending transit allowed)"
)
LEDGER_CHECK_INCONCLUSIVE = Gauge(
    "pm_ledger_check_inconclusive",
    "Imbalances the status poller's last ledger check read in every scan but could not confirm: transfers on "
    "that ledger between every two scans (traffic, or a real imbalance hidden by it; not counted as problems)",
)
LEDGER_CHECK_TIMESTAMP_SECONDS = Gauge(
    "pm_ledger_check_timestamp_seconds",
    "Unix time the status poller's last ledger check completed (0: none yet, or not a poller)",
)
LEDGER_CHECK_FAILURES = Counter(
    "pm_ledger_check_failures_total", "Periodic ledger checks that could not complete (ledger away, too large)"
)
# The status poller's balance snapshot (consumers/balance_snapshot.py); unlabelled like the ledger check's.
BALANCE_SNAPSHOT_TIMESTAMP_SECONDS = Gauge(
    "pm_balance_snapshot_timestamp_seconds",
    "Unix time the status poller's last complete balance snapshot (every account) ended (0: none yet, or not a poller)",
)
BALANCE_SNAPSHOT_ACCOUNTS = Gauge(
    "pm_balance_snapshot_accounts", "Accounts the status poller's last complete balance snapshot wrote"
)
BALANCE_SNAPSHOT_FAILURES = Counter(
    "pm_balance_snapshot_failures_total", "Balance snapshot runs that could not complete (ledger or database away)"
)
