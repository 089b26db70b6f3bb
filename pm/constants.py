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
