-- Issue 12: each API key's request rate. Every gateway process refuses a key's signed requests beyond
-- it with 429 RATE_LIMITED (a token bucket per key in the process's memory, gateway/rate_limit.py),
-- before the request touches PostgreSQL. (0012 was taken by the idempotency change; 0013 is another
-- change's.)

-- Requests per second, and so also the burst: a bucket holds one second of requests. The default
-- lets every existing key keep its traffic; `pm keys create --rate N` and `pm keys set-rate` choose.
-- The bounds are pm.config.constants.KEY_REQUESTS_PER_S_MIN / _MAX.
ALTER TABLE pm.api_key ADD COLUMN requests_per_s integer NOT NULL DEFAULT 1000
    CONSTRAINT api_key_requests_per_s_range CHECK (requests_per_s BETWEEN 1 AND 100000);
