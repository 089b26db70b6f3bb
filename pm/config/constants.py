"""Redis key prefixes and tuning numbers that are not per-stage (those live in streams.yaml).

Units are in the names; an odd value says why.
"""

# HMAC replay protection: SET NX with expiry. The nonce must outlive the whole accepted clock window
# (±300 s), so a replay can never find its nonce expired while its timestamp is still acceptable.
NONCE_KEY_PREFIX = "pm:nonce:"
NONCE_TTL_S = 2 * 300 + 60
# Reads (GET) keep their nonces in Redis only; this key holds the unix second since which Redis has held
# every read nonce: written (SET NX) by the first read that finds it missing, i.e. at the first start
# and after Redis lost its data. A read signed before it is refused. It has no expiry, and Redis must
# not evict it (maxmemory-policy noeviction): losing nonces while keeping it would reopen replays.
NONCE_STORE_COMPLETE_SINCE_KEY = "pm:nonce-store-complete-since"
# On a Redis Cluster, a read's nonce and the marker that vouches for it must live on one node (a node that
# loses its data loses both), so both carry a hash tag: one of NONCE_SLOTS, by the key id (gateway/auth.py
# `nonce_key`, `nonce_marker_key`). More than one, so the nonces spread over the masters; few, so a fresh
# or emptied Redis has few markers to write (the gateway writes them all at its start).
NONCE_SLOTS = 16
# Requests with effects (POST, PUT, DELETE) claim their nonces in PostgreSQL (pm.request_nonce); a row
# is kept NONCE_TTL_S, past any timestamp the ±300 s window could still accept, then purged.

# Handler errors kept beside pending entries, so a dead letter says why it died.
ENTRY_ERROR_KEY_PREFIX = "pm:entry-error:"
ENTRY_ERROR_TTL_S = 7 * 24 * 3600

# A batch that failed because a dependency was down (PostgreSQL, the ledger, Redis) stays pending and its
# delivery is not counted against max_deliveries (an outage of any length must not dead-letter it). The
# stage then reads nothing for OUTAGE_BACKOFF_S (no busy loop of failing batches while the dependency is
# down), and the batch's entries may be claimed again OUTAGE_RETRY_AFTER_MS later (instead of a whole
# claim_idle_ms): a short outage (connections dropped) costs about a second, not 15.
OUTAGE_BACKOFF_S = 1.0
OUTAGE_RETRY_AFTER_MS = 1_000
# A stage's claim loop claims on while its rounds (of batch_size entries) come back full, at most this many
# rounds per look (every claim_idle_ms / 2): up to 25,600 entries per look at the default batch of 256.
CLAIM_ROUNDS_PER_LOOK_MAX = 100

# Settlement's slot for asking a PSP about one intent (SET NX PX psp_status_query_interval_s): at most
# one status query per intent per interval, however many entries or callbacks name it.
PSP_STATUS_QUERY_KEY_PREFIX = "pm:psp-status-query:"

# How long a Prefer: wait=N request may wait for a terminal state.
PREFER_WAIT_MAX_S = 10

# The gateway (gateway/). Tuning numbers that operators never need to change; settings hold the rest.

# Key rotation (`pm keys rotate --grace`): how long the previous secret keeps working by default, and at most.
KEY_ROTATION_GRACE_S_DEFAULT = 24 * 3600
KEY_ROTATION_GRACE_S_MAX = 30 * 86_400

# An API key read from PostgreSQL is trusted this long, so a revocation takes effect within a second
# while a busy caller costs one key lookup per second instead of one per request.
API_KEY_CACHE_TTL_S = 1.0
# A signature that matches no cached secret re-reads a key cached longer than this (a rotation may
# have issued a new secret since): new secrets work at once; bad signatures cost <= 10 reads/s per key.
API_KEY_RECHECK_S = 0.1
# Bounds the cache against a flood of made-up key ids (each is cached as unknown for the TTL too).
API_KEY_CACHE_ENTRIES_MAX = 10_000

# Per-key request rates (pm.api_key.requests_per_s, sql/0015): a key's bucket holds one second of its
# rate, so a key may burst its rate at once and then sustain it. The bounds are the table's CHECK.
KEY_REQUESTS_PER_S_DEFAULT = 1_000
KEY_REQUESTS_PER_S_MIN = 1
KEY_REQUESTS_PER_S_MAX = 100_000
# A 429 RATE_LIMITED says to wait at least this long (Retry-After is whole seconds).
RATE_LIMITED_RETRY_AFTER_S_MIN = 1

# Idempotency-Key: what a caller may send (visible ASCII).
IDEMPOTENCY_KEY_LENGTH_MAX = 128
# PM_IDEMPOTENCY_RETENTION_S's default: records (and the answers replayed from them) are kept a day.
IDEMPOTENCY_RETENTION_S_DEFAULT = 24 * 3600
# PM_WEBHOOK_RETENTION_S's default: a delivered outbox row (merchant webhook, review event) stays a week
# for `pm outbox list`; PM_PSP_EVENT_RETENTION_S's: a PSP callback event is remembered (so a resend is a
# duplicate) 30 days, far past any PSP's resend window and the hold timeout.
WEBHOOK_RETENTION_S_DEFAULT = 7 * 86_400
PSP_EVENT_RETENTION_S_DEFAULT = 30 * 86_400

# The status poller deletes expired idempotency records, request nonces, delivered outbox rows and PSP
# events every PURGE_INTERVAL_S, in rounds of at most PURGE_ROUND_ROWS_MAX rows (one short statement each,
# oldest first), at most PURGE_ROUNDS_MAX rounds per table per run: up to 200,000 rows per 5 s per table,
# far above the rate intents come in, without one long transaction or lock.
PURGE_INTERVAL_S = 5.0
# How often the poller's report loop looks whether the ledger check or the balance snapshot is due.
REPORTS_LOOK_S = 1.0
PURGE_ROUND_ROWS_MAX = 5_000
PURGE_ROUNDS_MAX = 40

# The status poller runs the ledger check (`pm ledger check --allow-pending-transit`) every
# PM_LEDGER_CHECK_INTERVAL_S (this default) for the metrics the alerts read (pm_ledger_transit_minor,
# pm_ledger_check_problems). It reads every account, one page of 8,189 per request, one page in memory at a
# time; past LEDGER_CHECK_PAGES_MAX pages (about a million accounts: seconds of reading on the postgres
# backend) it stops, counts a failure and the operator runs `pm ledger check` by hand. An imbalance on a
# ledger of several pages is re-read before it counts (ledger.check.SCANS_MAX scans at most, each within
# this bound), as a transfer landing between two page reads looks like one.
LEDGER_CHECK_INTERVAL_S_DEFAULT = 300.0
# A mini-app charge waits this long for its user's confirmation, then ends REJECTED CONFIRMATION_EXPIRED
# (PM_MINIAPP_CONFIRMATION_TIMEOUT_S): five minutes, a user's moment at the app's prompt.
MINIAPP_CONFIRMATION_TIMEOUT_S_DEFAULT = 300
# The status poller expires at most this many waiting charges per round (oldest first).
CONFIRMATION_EXPIRY_ROUND_MAX = 1000
LEDGER_CHECK_PAGES_MAX = 128
# The status poller's balance snapshot (consumers/balance_snapshot.py into pm.account_balance_snapshot) runs
# every PM_BALANCE_SNAPSHOT_INTERVAL_S (this default; 0: never). It reads pages of
# BALANCE_SNAPSHOT_PAGE_ACCOUNTS accounts (one ledger query each, half the 8,189 a request may answer, so a
# page's one upsert statement stays tens of milliseconds), at most BALANCE_SNAPSHOT_PAGES_MAX pages per run
# (524,288 accounts); the next run goes on where one stopped. An account PM cannot name from its id alone
# (a user's, a merchant's) is named from the intent of its newest transfer: one ledger read each, at most
# BALANCE_SNAPSHOT_NAME_LOOKUPS_CONCURRENT_MAX at once and BALANCE_SNAPSHOT_NAME_LOOKUPS_PER_RUN_MAX per run
# (a new ledger's accounts get their names over a few runs; their balances are right from the first).
BALANCE_SNAPSHOT_INTERVAL_S_DEFAULT = 300.0
BALANCE_SNAPSHOT_PAGE_ACCOUNTS = 4_096
BALANCE_SNAPSHOT_PAGES_MAX = 128
BALANCE_SNAPSHOT_NAME_LOOKUPS_CONCURRENT_MAX = 16
BALANCE_SNAPSHOT_NAME_LOOKUPS_PER_RUN_MAX = 32_768
# GET /admin/balances and `pm balances snapshot`: rows per page by default, and at most.
BALANCES_PAGE_ROWS_DEFAULT = 100
BALANCES_PAGE_ROWS_MAX = 1_000
# Consumers of a stage's group idle past PM_STREAM_CONSUMER_PRUNE_IDLE_S (default an hour) with nothing
# pending are deleted by the status poller every CONSUMER_PRUNE_INTERVAL_S, at most
# CONSUMER_PRUNE_ROUND_MAX per stage per round (one atomic script call each: XINFO CONSUMERS, then
# XGROUP DELCONSUMER only of those still idle with nothing pending, so no entry is ever dropped).
CONSUMER_PRUNE_IDLE_S_DEFAULT = 3_600
CONSUMER_PRUNE_INTERVAL_S = 60.0
CONSUMER_PRUNE_ROUND_MAX = 1_000

# The first stage's backlog is measured at most this often (one XINFO GROUPS), shared by all requests.
BACKLOG_MEASURE_INTERVAL_S = 0.2
# What an OVERLOADED answer tells the caller to wait (Retry-After, whole seconds).
BACKPRESSURE_RETRY_AFTER_S = 1

# The shared status pub/sub connection: how long a subscriber waits for Redis to confirm SUBSCRIBE
# before it goes on without it (it then relies on PostgreSQL), and how many status messages one
# subscriber may have unread before they are replaced by a re-read from PostgreSQL.
STATUS_SUBSCRIBE_TIMEOUT_S = 2.0
STATUS_SUBSCRIBER_BUFFER_MAX = 64
# Back-off between reconnection attempts of the status connection when Redis is down: doubling from
# the first to the most, so an outage costs a log line every few seconds, not a storm.
STATUS_RECONNECT_DELAY_S = 0.5
STATUS_RECONNECT_DELAY_S_MAX = 5.0

# /readyz: each dependency must answer within this.
READY_CHECK_TIMEOUT_S = 2.0
# PostgreSQL, for every process (pm/store/pool.py): a statement running longer than this is cancelled (PM
# runs only short, batched ones: a stage's compare-and-set of 256 rows takes milliseconds), a connection
# attempt gives up after this, and closing a pool waits at most this for its holders.
DATABASE_COMMAND_TIMEOUT_S = 15.0
DATABASE_CONNECT_TIMEOUT_S = 10.0
DATABASE_POOL_CLOSE_TIMEOUT_S = 10.0
# Connections of one stage, poller or outbox process (the gateway's is a setting), and the bounds on its
# Redis commands: a stage's blocking read is its stream's `block_ms`, far below the socket timeout.
STAGE_DATABASE_CONNECTIONS_MAX = 4
STAGE_REDIS_SOCKET_TIMEOUT_S = 10.0
STAGE_REDIS_CONNECT_TIMEOUT_S = 5.0
# Redis: bounds on connecting and on any one command of the gateway (the status reader blocks on
# purpose and is exempt); a request waits at most this long for a free pooled connection.
GATEWAY_REDIS_SOCKET_TIMEOUT_S = 5.0
GATEWAY_REDIS_CONNECT_TIMEOUT_S = 5.0
GATEWAY_REDIS_POOL_WAIT_S = 5.0
# Graceful shutdown of every process: PM_SHUTDOWN_GRACE_S (settings).

# A stage looks for entries to claim (idle past claim_idle_ms) every half claim_idle_ms, but at least this
# often: entries a stopping consumer handed back (pm.redis.streams.hand_back, marked idle for claim_idle_ms)
# are taken within this, not within half a claim period. One XPENDING per stage per interval.
CLAIM_INTERVAL_S_MAX = 1.0
# How often a stage checks that its FastStream subscriber still reads: FastStream stops a subscriber for
# good when its group is gone (NOGROUP: Redis lost its data); the stage then recreates the groups and
# subscribes again (consumers/main.py). One attribute read per interval; no Redis command while all is well.
SUBSCRIBER_CHECK_INTERVAL_S = 0.5
# A stopping stage hands back at most this many of its pending entries (XPENDING pages of a stage's
# batch size): far above what one consumer reads between two acknowledgements.
HAND_BACK_ENTRIES_MAX = 10_000
# After answering a request whose body it did not read whole (408 too slow, 413 too large), aiohttp
# drains and drops what the client still sends for this long, so the client reads the answer rather
# than a reset, then closes the connection (aiohttp's default is 10 s: a slow sender's hold on a
# connection is bounded by PM_REQUEST_BODY_TIMEOUT_MS plus this).
GATEWAY_LINGERING_TIME_S = 2.0

# Defined by the core (pm.domain: it may import nothing of pm.config), named here with the rest.
from pm.domain.cel.base import EXPRESSION_LENGTH_HARD_MAX  # noqa: E402
from pm.domain.limits import LIMIT_COUNTER_EXPIRY_MARGIN_S as LIMIT_COUNTER_EXPIRY_MARGIN_S  # noqa: E402
from pm.domain.limits import LIMIT_COUNTER_KEY_PREFIX as LIMIT_COUNTER_KEY_PREFIX  # noqa: E402
from pm.domain.limits import LIMIT_KEY_PREFIX as LIMIT_KEY_PREFIX  # noqa: E402
from pm.domain.limits import LIMIT_RELEASED_KEY_PREFIX as LIMIT_RELEASED_KEY_PREFIX  # noqa: E402
from pm.domain.money import AMOUNT_MINOR_EXACT_MAX as AMOUNT_MINOR_EXACT_MAX  # noqa: E402

# The schema's cap on a stored CEL expression (sql/0003_money_rules.sql); the setting may only lower it.
CEL_EXPRESSION_LENGTH_HARD_MAX = EXPRESSION_LENGTH_HARD_MAX

# An intent re-driven long after its period (a stuck intent, the poller) is still checked in that period:
# its counter then lives at least this long, instead of expiring the moment it is rebuilt.
LIMIT_COUNTER_TTL_S_MIN = 3600
# A redelivered limits entry arrives within claim_idle_ms x max_deliveries (minutes); a rebuild reads
# PostgreSQL milliseconds before it writes. A day is far beyond both.
LIMIT_RELEASED_TTL_S = 24 * 3600
# A rebuild counts at most this many intents of one user in one period; beyond it the batch fails (and,
# retried, goes to the dead-letter stream) rather than loading an unbounded list into Redis.
LIMIT_REBUILD_INTENTS_MAX = 100_000
# GET /api/pm/history: the largest page PostgreSQL is asked for (the setting is one below: a page reads one
# row more to know whether another follows).
HISTORY_PAGE_MAX = 200
# Every intent is matched against every enabled rule in Python: keep that list short.
LIMIT_RULES_ENABLED_MAX = 100
# GET /admin/limit-rules and /admin/routes answer at most this many rows, disabled ones included.
LIMIT_RULES_LISTED_MAX = 1_000
# Every validation process holds all enabled routes and scans them per intent; disabled ones count too.
ROUTES_MAX = 1_000
# Every process that uses fee rules, limit rules or routes polls pm.rule_generation at most this often
# (pm/store/rules.py, GenerationCache), so an edit applies everywhere within 0.5 s plus one query: the issue asks
# for a second. One cheap query per process per interval.
RULES_POLL_INTERVAL_S = 0.5

# Fee rules (pm/domain/pricing.py, pm/store/fee_rules.py, pm/store/rules.py).
# Each enabled rule is compiled in every process (0.2 ms each here: 500 take 0.1 s, once per change) and
# candidates are matched in Python per intent: a ceiling far above any fee schedule.
FEE_RULES_ENABLED_MAX = 500
# GET /admin/fee-rules answers at most this many rules (disabled ones last); a rule's versions, this many.
FEE_RULES_LISTED_MAX = 1_000
FEE_RULE_VERSIONS_LISTED_MAX = 100
