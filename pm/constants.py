"""Redis key prefixes and tuning numbers that are not per-stage (those live in streams.yaml).

Units are in the names; an odd value says why.
"""

# HMAC replay protection: SET NX with expiry. The nonce must outlive the whole accepted clock window
# (±300 s), so a replay can never find its nonce expired while its timestamp is still acceptable.
NONCE_KEY_PREFIX = "pm:nonce:"
NONCE_TTL_S = 2 * 300 + 60

# Handler errors kept beside pending entries, so a dead letter says why it died.
ENTRY_ERROR_KEY_PREFIX = "pm:entry-error:"
ENTRY_ERROR_TTL_S = 7 * 24 * 3600

# How long a Prefer: wait=N request may wait for a terminal state.
PREFER_WAIT_MAX_S = 10

# The gateway (gateway/). Tuning numbers that operators never need to change; settings hold the rest.

# An API key read from PostgreSQL is trusted this long, so a revocation takes effect within a second
# while a busy caller costs one key lookup per second instead of one per request.
API_KEY_CACHE_TTL_S = 1.0
# A signature that matches no cached secret re-reads a key cached longer than this (a rotation may
# have issued a new secret since): new secrets work at once; bad signatures cost <= 10 reads/s per key.
API_KEY_RECHECK_S = 0.1
# Bounds the cache against a flood of made-up key ids (each is cached as unknown for the TTL too).
API_KEY_CACHE_ENTRIES_MAX = 10_000

# Idempotency-Key: what a caller may send (visible ASCII), and how long a claim without a stored
# response counts as in flight (409) before we presume the first request died after its commit.
IDEMPOTENCY_KEY_LENGTH_MAX = 128
IDEMPOTENCY_IN_FLIGHT_S_MAX = 30.0

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
# asyncpg: a statement running longer than this is cancelled (the gateway runs only short ones).
GATEWAY_DATABASE_COMMAND_TIMEOUT_S = 10.0
# Redis: bounds on connecting and on any one command of the gateway (the status reader blocks on
# purpose and is exempt); a request waits at most this long for a free pooled connection.
GATEWAY_REDIS_SOCKET_TIMEOUT_S = 5.0
GATEWAY_REDIS_CONNECT_TIMEOUT_S = 5.0
GATEWAY_REDIS_POOL_WAIT_S = 5.0
# Graceful shutdown: in-flight requests get this long to finish.
GATEWAY_SHUTDOWN_TIMEOUT_S = 10.0
