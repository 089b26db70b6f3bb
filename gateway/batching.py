"""Round trips shared by concurrent requests: what many requests send at once goes out as one batch.

    redis_batch = RedisBatch(redis)
    claimed = await redis_batch.execute("SET", key, b"1", "NX", "EX", 660)   # in the next pipeline

    responses = ResponseRecorder(pool)
    responses.record(api_key_id, idempotency_key, 202, body)                  # in the next UPDATE

While one batch is on the wire, the next one fills; it is sent when the first returns. So an idle
gateway sends each command at once (a batch of one, no added delay) and a busy one sends a few large
batches instead of many small round trips: fewer system calls, timers and pooled connections per
request, which is what bounds a 2-core machine. Every batch is bounded (`BATCH_SIZE_MAX`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from pm import intents

log = logging.getLogger("pm.gateway")

BATCH_SIZE_MAX = 512


class RedisBatch:
    """Redis commands of concurrent requests, sent in one non-transactional pipeline per batch."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def execute(self, *command: Any) -> Any:
        """The command's reply; raises what Redis answered (e.g. WRONGTYPE) or the connection error."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((command, future))
        # The sender drains `_queued` until empty and only then ends, with no await between its last
        # look and its end: a command queued here is always seen by a running sender.
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued())
        return await future

    async def _send_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[:BATCH_SIZE_MAX], self._queued[BATCH_SIZE_MAX:]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for command, _ in batch:
                        pipe.execute_command(*command)
                    replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # the whole batch failed (connection): every command fails alike
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue  # its request was cancelled meanwhile
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)


class ResponseRecorder:
    """Stores first responses for idempotent replays with `pm.intents.complete_idempotency`, for every
    request waiting at that moment in one statement. A request waits for its row, so a
    replay after the answer always finds it. A failed write is logged, not raised: the intent exists,
    and its claim ages into the "first request died" case, answered from the intent itself."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._queued: list[tuple[tuple[str, str, int, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, api_key_id: str, idempotency_key: str, status: int, body: Any) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append(((api_key_id, idempotency_key, status, body), future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        await future

    async def _write_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[:BATCH_SIZE_MAX], self._queued[BATCH_SIZE_MAX:]
            try:
                await intents.complete_idempotency(self._pool, [row for row, _ in batch])
            except Exception as exc:  # never leave a waiting request hanging
                log.error("could not store idempotent responses", extra={"count": len(batch), "error": repr(exc)})
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
