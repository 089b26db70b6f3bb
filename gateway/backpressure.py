"""Backpressure: refuse new intents while the first stage is too far behind (503 OVERLOADED).

The backlog is the validation group's `lag` (entries not yet delivered) plus its pending count
(delivered, not acknowledged), from XINFO GROUPS. It is measured at most once per
`BACKLOG_MEASURE_INTERVAL_S`, by one request while the others wait for the same answer, so the check
costs one Redis command per interval however busy the gateway is.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pm.config.constants import BACKLOG_MEASURE_INTERVAL_S
from pm.redis import streams

log = logging.getLogger("pm.gateway")


class BacklogMonitor:
    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        entries_max: int,
        interval_s: float = BACKLOG_MEASURE_INTERVAL_S,
    ) -> None:
        assert entries_max > 0 and interval_s > 0
        self._redis = redis
        self._stream = stream
        self._group = group
        self._entries_max = entries_max
        self._interval_s = interval_s
        self._measured_at_s = float("-inf")
        self._measuring: asyncio.Task[None] | None = None
        self.entries = 0

    async def overloaded(self) -> bool:
        if time.monotonic() - self._measured_at_s >= self._interval_s:
            if self._measuring is None or self._measuring.done():
                self._measuring = asyncio.create_task(self._measure())
            await asyncio.shield(self._measuring)
        return self.entries > self._entries_max

    async def _measure(self) -> None:
        try:
            backlog = await streams.backlog(self._redis, self._stream, self._group)
            if backlog is None:
                # No group yet (no validation process has started): everything in the stream waits.
                self.entries = int(await self._redis.xlen(self._stream))
            else:
                self.entries = backlog.lag + backlog.pending
        except (RedisError, OSError) as exc:
            # Keep the last measurement; Redis trouble shows up in the nonce check and /readyz anyway.
            log.warning("backlog measurement failed", extra={"stream": self._stream, "error": repr(exc)})
        self._measured_at_s = time.monotonic()
