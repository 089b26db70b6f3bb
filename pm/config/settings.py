"""The one place that reads the environment: every `PM_*` variable becomes a field of `Settings`.

    settings = Settings()                      # reads PM_* from the environment
    settings.effective_ledger_url(database_url)

Every field is documented in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pm.config.constants import (
    AMOUNT_MINOR_EXACT_MAX,
    BALANCE_SNAPSHOT_INTERVAL_S_DEFAULT,
    CEL_EXPRESSION_LENGTH_HARD_MAX,
    CONSUMER_PRUNE_IDLE_S_DEFAULT,
    HISTORY_PAGE_MAX,
    IDEMPOTENCY_RETENTION_S_DEFAULT,
    LEDGER_CHECK_INTERVAL_S_DEFAULT,
    MINIAPP_CONFIRMATION_TIMEOUT_S_DEFAULT,
    PREFER_WAIT_MAX_S,
    PSP_EVENT_RETENTION_S_DEFAULT,
    WEBHOOK_RETENTION_S_DEFAULT,
)
from pm.config.redis_url import as_cluster_url, is_cluster_url, parse_cluster_url
from pm.config.topology import TOPOLOGY_FILE
from pm.domain.money import CURRENCIES
from pm.domain.webhook_policy import AllowedHosts

DEAD_LETTER_STREAM_ENTRIES_MAX_DEFAULT = 100_000

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    # `env_ignore_empty`: `PM_DATABASE_URL=` (set but empty) means "not configured", which is what a
    # shell user who clears a variable expects, instead of a connection attempt to "".
    model_config = SettingsConfigDict(env_prefix="PM_", env_ignore_empty=True, extra="ignore", frozen=True)

    database_url: str | None = None
    # A Redis or Valkey Cluster: PM_REDIS_URL=redis+cluster://host:port,host:port, or a redis:// URL with
    # PM_REDIS_CLUSTER=true (pm/redis/wire.py). With no PM_REDIS_URL, the embedded servers start a cluster
    # of three masters. Before redis_url: its validator reads this.
    redis_cluster: bool = False
    redis_url: str | None = None
    # The limit counters' writes (reservations, give-backs) count only once this many replicas have them
    # (WAIT after each script call; pm/redis/limit_counters.py Durability): a failover then cannot lose a
    # reservation the limits stage acted on. 0 (the default): not waited for. A standalone server only.
    redis_limits_wait_replicas: int = Field(default=0, ge=0, le=5)
    redis_limits_wait_timeout_ms: int = Field(default=100, ge=1, le=5_000)
    # Comma-separated TigerBeetle replica addresses, e.g. "3000,3001" or "10.0.0.1:3000,10.0.0.2:3000".
    tigerbeetle_addresses: str | None = None
    tigerbeetle_cluster_id: int = Field(default=0, ge=0)
    # How long a TigerBeetle request may go unanswered before its caller treats the ledger as down (the
    # official client itself waits forever for an unreachable cluster; ledger/tigerbeetle_client.py).
    tigerbeetle_request_timeout_ms: int = Field(default=5_000, ge=10, le=600_000)
    ledger_url: str | None = None
    # Resolved once, when the settings are read, so a later chdir cannot move the data.
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".data")
    log_level: LogLevel = "INFO"
    # uvloop (libuv) runs the same asyncio code with fewer CPU cycles per socket event; `asyncio` is the
    # standard library's loop (also used where uvloop is not installed, e.g. Windows).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Read only by the test suite (tests/conftest.py): servers to test against instead of embedded ones.
    test_database_url: str | None = None
    test_redis_url: str | None = None
    # Tests only: how long the ledger outage test (tests/integration/test_ledger_outage.py) keeps the
    # ledger's PostgreSQL stopped. The 30 s by default; a CI short of time may set less.
    test_ledger_outage_s: float = Field(default=30.0, ge=1, le=300)

    # The pipeline's topology (streams, groups, batch sizes); another file lets a test or a benchmark run
    # with streams of its own or other tuning numbers.
    streams_file: Path = TOPOLOGY_FILE
    # Events per ledger request from the stages (chains are never split). TigerBeetle takes 8189; a server
    # in --development mode only 253 (DESIGN.md §10), so set this to 253 against one.
    ledger_request_events_max: int = Field(default=8189, ge=1, le=8189)
    # A stage or poller process serves /metrics on this port; honcho gives each process a $PORT.
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, validation_alias=AliasChoices("PM_METRICS_PORT", "PORT")
    )

    # `pm send` / `pm balance`: which gateway and key (else the demo keys `pm up` wrote to the data dir).
    gateway_url: str | None = None
    api_key_id: str | None = None
    api_key_secret: str | None = None

    # The gateway (gateway/): where it listens, and a bound on everything a caller can send.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    # Off by default: aiohttp's access log halves requests/s (DESIGN.md §10); metrics count requests.
    http_access_log: bool = False
    http_body_bytes_max: int = Field(default=16_384, ge=1_024, le=1_048_576)
    # A body must arrive whole this long after the request's headers (a slow sender holds a connection
    # and a request's memory): else 408 REQUEST_TIMEOUT and the connection is closed.
    request_body_timeout_ms: int = Field(default=10_000, ge=100, le=120_000)
    # aiohttp's parser limits: the request line and one header line, and one header field's value.
    http_header_line_bytes_max: int = Field(default=8_190, ge=256, le=65_536)
    http_header_field_bytes_max: int = Field(default=8_190, ge=256, le=65_536)
    http_database_connections_max: int = Field(default=10, ge=1, le=200)
    http_redis_connections_max: int = Field(default=16, ge=4, le=1_000)
    intent_amount_minor_min: int = Field(default=1, ge=1)
    # 100,000,000.00 THB: far above any wallet limit, far below bigint and TigerBeetle's u128. At most
    # what the limits stage compares exactly (pm/config/constants.py), or a larger intent would stop that stage.
    intent_amount_minor_max: int = Field(default=10_000_000_000, ge=1, le=AMOUNT_MINOR_EXACT_MAX)
    intent_tags_count_max: int = Field(default=16, ge=0, le=256)
    intent_tag_length_max: int = Field(default=64, ge=1, le=256)
    # The wallet's own currency (ISO 4217, one of pm.domain.money.CURRENCIES): what GET /api/pm/balance
    # answers without `?currency=`, and the `pm` commands' default --currency.
    wallet_currency: str = "THB"
    # One below HISTORY_PAGE_MAX: a page reads one row more to know whether another follows.
    history_page_size_max: int = Field(default=100, ge=1, le=HISTORY_PAGE_MAX - 1)
    # An Idempotency-Key's record (and so its stored answer) is kept this long, then deleted by the status
    # poller; after that the key may name a new intent. Stripe's 24 h; at least an hour, so no retry of a
    # request in flight can outlive its record.
    idempotency_retention_s: int = Field(default=IDEMPOTENCY_RETENTION_S_DEFAULT, ge=3_600, le=90 * 86_400)
    # A MINIAPP_CHARGE no allowance covers waits this long for its user (POST /intents/{id}/confirm), then
    # the status poller rejects it CONFIRMATION_EXPIRED: from 10 s to a day.
    miniapp_confirmation_timeout_s: int = Field(default=MINIAPP_CONFIRMATION_TIMEOUT_S_DEFAULT, ge=10, le=86_400)
    # The status poller checks the ledger this often for the metrics (0: never; the alerts then see none).
    ledger_check_interval_s: float = Field(default=LEDGER_CHECK_INTERVAL_S_DEFAULT, ge=0, le=86_400)
    # The status poller snapshots every account's balances into PostgreSQL this often (0: never).
    balance_snapshot_interval_s: float = Field(default=BALANCE_SNAPSHOT_INTERVAL_S_DEFAULT, ge=0, le=86_400)
    # The status poller deletes a stage's consumers idle this long that hold no pending entries (each
    # process is a new consumer, so restarts leave dead ones behind). A live consumer reads every block_ms;
    # one deleted while paused is created again by its next read.
    stream_consumer_prune_idle_s: int = Field(default=CONSUMER_PRUNE_IDLE_S_DEFAULT, ge=60, le=30 * 86_400)
    # A delivered outbox row (merchant webhook, review event) is deleted this long after its delivery; one
    # not delivered (pending or given up) is kept whatever its age. At least an hour: `pm outbox list`.
    webhook_retention_s: int = Field(default=WEBHOOK_RETENTION_S_DEFAULT, ge=3_600, le=400 * 86_400)
    # A PSP callback event (what makes a resend a duplicate) is deleted this long after it came. At least a
    # day: far past the hold timeout, so only final intents' events go (a resend then moves nothing).
    psp_event_retention_s: int = Field(default=PSP_EVENT_RETENTION_S_DEFAULT, ge=86_400, le=400 * 86_400)
    # POST /intents answers 503 OVERLOADED once the first stage's backlog (lag + pending) passes this.
    backpressure_backlog_entries_max: int = Field(default=100_000, ge=1)
    prefer_wait_s_max: float = Field(default=PREFER_WAIT_MAX_S, gt=0, le=PREFER_WAIT_MAX_S)
    # An SSE stream ends after this long (the client reconnects with Last-Event-ID); pings keep it open.
    sse_duration_s_max: float = Field(default=300.0, gt=0, le=3_600)
    sse_ping_interval_s: float = Field(default=15.0, gt=0, le=300)
    # Open SSE streams per gateway process: per (API key, X-User-Id), 429 beyond; in all, 503 beyond
    # (gateway/stream_slots.py).
    sse_streams_per_user_max: int = Field(default=10, ge=1, le=1_000)
    sse_streams_max: int = Field(default=10_000, ge=1, le=1_000_000)
    # The longest CEL expression (condition or amount) a fee rule may be saved with; rules already saved
    # still load. Short rules are the point: the length bounds what one evaluation can cost (pm/domain/cel).
    fee_rule_expression_length_max: int = Field(default=1_000, ge=16, le=CEL_EXPRESSION_LENGTH_HARD_MAX)

    # Payment service providers. PM calls each PSP at its URL with `psp_api_key`; each PSP signs its
    # callbacks with its own secret (X-PSP-Signature). The URLs default to the PSP simulator's that `pm up`
    # runs (`pm run psp-sim`); the secrets have no default (pm/psp/secrets.py): `pm up` and the tests pass
    # the simulator's public values explicitly, and a process whose PSPs are not the local simulator
    # refuses to start without real ones.
    psp_ipps_url: str = "http://127.0.0.1:8090/ipps"
    psp_qp_url: str = "http://127.0.0.1:8090/qp"
    psp_api_key: str | None = Field(default=None, min_length=1, max_length=1_024)
    psp_ipps_callback_secret: str | None = Field(default=None, min_length=1, max_length=1_024)
    psp_qp_callback_secret: str | None = Field(default=None, min_length=1, max_length=1_024)
    psp_request_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Every PSP timing counts from the hold's own ledger timestamp (consumers/holds.py), in this order:
    #   submit deadline < outcome deadline < hold timeout
    # The PSP connector submits a payment only before the submit deadline (None: half the outcome deadline),
    # so every submit has ended (answered or timed out) by the outcome deadline; with no outcome by then PM
    # voids the hold and fails the intent EXPIRED, before the ledger's own timeout would (the backstop).
    psp_hold_timeout_s: int = Field(default=900, ge=3, le=7 * 86_400)
    psp_outcome_deadline_s: int = Field(default=600, ge=2, le=7 * 86_400)
    psp_submit_deadline_s: int | None = Field(default=None, ge=1, le=7 * 86_400)
    # Settlement asks a PSP about one intent at most this often, however many entries or callbacks name it.
    psp_status_query_interval_s: float = Field(default=10.0, ge=0.1, le=3_600)
    # Where PSPs send callbacks: the gateway as the PSP reaches it (else http://PM_HTTP_HOST:PM_HTTP_PORT).
    public_url: str | None = None
    # The simulator: where it listens, and how long a payout or payment takes before its outcome.
    psp_sim_host: str = "127.0.0.1"
    psp_sim_port: int = Field(default=8090, ge=1, le=65535)
    psp_sim_delay_ms: int = Field(default=300, ge=0, le=60_000)

    # `pm run edge-auth` (pm/dev/edge_auth.py): the development stand-in for the Auth Center's auth_request
    # endpoint behind ops/nginx/pm.conf. It takes the app's JWT signed with exactly one of an HS256 secret or
    # an RS256 public key (a PEM file), with this issuer and audience, then signs the read for PM with the
    # edge's API key (scopes intents:read,balance:read, operations none). Unset: `pm run edge-auth` exits 2.
    edge_auth_host: str = "127.0.0.1"
    edge_auth_port: int = Field(default=8095, ge=1, le=65535)
    edge_auth_jwt_hs256_secret: str | None = Field(default=None, min_length=32, max_length=1_024)
    edge_auth_jwt_public_key_file: Path | None = None
    edge_auth_jwt_issuer: str | None = Field(default=None, min_length=1, max_length=256)
    edge_auth_jwt_audience: str | None = Field(default=None, min_length=1, max_length=256)
    # Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    edge_auth_jwt_leeway_s: int = Field(default=10, ge=0, le=60)
    edge_auth_key_id: str | None = Field(default=None, min_length=1, max_length=64)
    edge_auth_key_secret: str | None = Field(default=None, min_length=1, max_length=1_024)

    # Merchant webhooks (pm/domain/webhook_policy.py): go only to public addresses, except to these hosts
    # (comma-separated host names or IP addresses), for a development or test receiver. Empty in production.
    webhook_allowed_hosts: str | None = None
    # Dead-letter streams (pm:dead:<stage>) keep about this many newest entries (XADD MAXLEN ~); an older
    # one's intent stays flagged in PostgreSQL (needs_operator) and can still be replayed by its id.
    dead_letter_stream_entries_max: int = Field(default=DEAD_LETTER_STREAM_ENTRIES_MAX_DEFAULT, ge=100, le=10_000_000)
    # SIGTERM: every process stops reading and gets this long to finish the batch (or round, or request) in
    # flight; what it read and did not finish it hands back for another consumer at once; then it exits 0.
    shutdown_grace_s: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _deadline_before_hold(self) -> Settings:
        if self.psp_outcome_deadline_s >= self.psp_hold_timeout_s:
            raise ValueError("PM_PSP_OUTCOME_DEADLINE_S must be below PM_PSP_HOLD_TIMEOUT_S (PM voids first)")
        if self.submit_deadline_s + math.ceil(self.psp_request_timeout_s) > self.psp_outcome_deadline_s:
            raise ValueError(
                "PM_PSP_SUBMIT_DEADLINE_S (default: half PM_PSP_OUTCOME_DEADLINE_S) plus PM_PSP_REQUEST_TIMEOUT_S"
                " must not exceed PM_PSP_OUTCOME_DEADLINE_S: every submit must have ended before PM decides"
            )
        return self

    @property
    def submit_deadline_s(self) -> int:
        """Seconds after the hold during which a payment may be submitted to its PSP."""
        if self.psp_submit_deadline_s is not None:
            return self.psp_submit_deadline_s
        return max(1, self.psp_outcome_deadline_s // 2)

    @field_validator("redis_url")
    @classmethod
    def _cluster_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("redis_cluster"):
            return as_cluster_url(value)
        if is_cluster_url(value):
            parse_cluster_url(value)  # refused here, with its reason, rather than at the first command
        return value

    @field_validator("tigerbeetle_addresses")
    @classmethod
    def _normalize_addresses(cls, value: str | None) -> str | None:
        # "3000, 3001" and "3000,3001" must name the same cluster; an all-blank value means "unset".
        if value is None:
            return None
        addresses = [address.strip() for address in value.split(",") if address.strip()]
        return ",".join(addresses) or None

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: str | None) -> str | None:
        AllowedHosts.parse(value)  # a bad entry is a configuration error now, not a refused delivery later
        return value

    def webhook_allowed(self) -> AllowedHosts:
        return AllowedHosts.parse(self.webhook_allowed_hosts)

    @field_validator("wallet_currency")
    @classmethod
    def _supported_wallet_currency(cls, value: str) -> str:
        if value not in CURRENCIES:
            raise ValueError(f"PM_WALLET_CURRENCY must be one of {', '.join(sorted(CURRENCIES))}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _amount_bounds_ordered(self) -> Settings:
        if self.intent_amount_minor_min > self.intent_amount_minor_max:
            raise ValueError("intent_amount_minor_min must not exceed intent_amount_minor_max")
        if self.redis_limits_wait_replicas and self.redis_url is not None and is_cluster_url(self.redis_url):
            raise ValueError("PM_REDIS_LIMITS_WAIT_REPLICAS is for a standalone Redis or Valkey, not a cluster")
        if self.sse_streams_per_user_max > self.sse_streams_max:
            raise ValueError("PM_SSE_STREAMS_PER_USER_MAX must not exceed PM_SSE_STREAMS_MAX")
        return self

    def effective_ledger_url(self, database_url: str | None) -> str:
        """The ledger to open: PM_LEDGER_URL if set; else TigerBeetle when addresses are set; else the
        `postgres` backend on `database_url` (the configured or the embedded PostgreSQL)."""
        if self.ledger_url is not None:
            return self.ledger_url
        if self.tigerbeetle_addresses is not None:
            return (
                f"tigerbeetle://{self.tigerbeetle_addresses}?cluster={self.tigerbeetle_cluster_id}"
                f"&request_timeout_ms={self.tigerbeetle_request_timeout_ms}"
            )
        assert database_url, "the postgres ledger needs a database URL: start or configure PostgreSQL first"
        return database_url

    def ledger_needs_database(self) -> bool:
        """True when the ledger lives in PostgreSQL, so a database must be running to open it."""
        return self.ledger_url is None and self.tigerbeetle_addresses is None
