"""Round trips shared by concurrent requests: what many requests send at once goes out as one batch.

    intents = IntentWriter(pool)
    outcome = await intents.create(new_intent)                               # in the next INSERT

    redis_batch = RedisBatch(redis)
    claimed = await redis_batch.execute("SET", key, b"1", "NX", "EX", 660)   # in the next pipeline

    responses = ResponseRecorder(pool)
    responses.record(api_key_id, idempotency_key, 202, body)                  # in the next UPDATE

While one batch is on the wire, the next one fills; it is sent when the first returns. So an idle
gateway sends each command at once (a batch of one, no added delay) and a busy one sends a few large
batches instead of many small round trips: fewer system calls, timers, pooled connections and
PostgreSQL commits per request, which is what bounds a 2-core machine. Every batch is bounded
(`BATCH_SIZE_MAX`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Generic, TypeVar

import asyncpg
import redis.asyncio as aioredis

from pm import intents

log = logging.getLogger("pm.gateway")

BATCH_SIZE_MAX = 512
assert BATCH_SIZE_MAX <= intents.CREATE_BATCH_MAX

Item = TypeVar("Item")
Reply = TypeVar("Reply")


class Batcher(Generic[Item, Reply]):
    """Queues items of concurrent callers; one sender task sends them a batch at a time."""

    def __init__(self) -> None:
        self._queued: list[tuple[Item, asyncio.Future[Reply]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Reply:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        # The sender drains `_queued` until empty and only then ends, with no await between its last
        # look and its end: an item queued here is always seen by a running sender.
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued())
        return await future

    async def _send_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[:BATCH_SIZE_MAX], self._queued[BATCH_SIZE_MAX:]
            items = [item for item, _ in batch]
            try:
                replies = await self.send(items)
            except Exception as exc:  # the whole batch failed: every caller gets the error
                replies = [exc] * len(batch)
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue  # its request was cancelled meanwhile
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def send(self, items: list[Item]) -> list[Reply | Exception]:
        """One reply (or the exception for that item alone) per item, in order."""
        raise NotImplementedError


class IntentWriter(Batcher[intents.NewIntent, intents.CreateOutcome]):
    """New intents of concurrent requests, claimed and inserted with one `pm.intents.create_intents`
    statement (one PostgreSQL commit) per batch. If a batch fails, each of its intents is tried alone,
    so a request the database refuses fails only itself."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self._pool = pool

    async def create(self, new_intent: intents.NewIntent) -> intents.CreateOutcome:
        return await self.submit(new_intent)

    async def send(self, items: list[intents.NewIntent]) -> list[intents.CreateOutcome | Exception]:
        try:
            return list(await intents.create_intents(self._pool, items))
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if len(items) == 1:
                return [exc]
            log.warning("a batch of new intents failed; trying each alone", extra={"count": len(items)})
        replies: list[intents.CreateOutcome | Exception] = []
        for item in items:
            try:
                replies.extend(await intents.create_intents(self._pool, [item]))
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                replies.append(exc)
        return replies


class RedisBatch(Batcher[tuple[Any, ...], Any]):
    """Redis commands of concurrent requests, sent in one non-transactional pipeline per batch."""

    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__()
        self._redis = redis

    async def execute(self, *command: Any) -> Any:
        """The command's reply; raises what Redis answered (e.g. WRONGTYPE) or the connection error."""
        return await self.submit(command)

    async def send(self, items: list[tuple[Any, ...]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in items:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))


class ResponseRecorder(Batcher[tuple[str, str, int, Any], None]):
    """Stores first responses for idempotent replays with `pm.intents.complete_idempotency`, for every
    request waiting at that moment in one statement. A request waits for its row, so a
    replay after the answer always finds it. A failed write is logged, not raised: the intent exists,
    and its claim ages into the "first request died" case, answered from the intent itself."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self._pool = pool

    async def record(self, api_key_id: str, idempotency_key: str, status: int, body: Any) -> None:
        await self.submit((api_key_id, idempotency_key, status, body))

    async def send(self, items: list[tuple[str, str, int, Any]]) -> list[None]:
        try:
            await intents.complete_idempotency(self._pool, items)
        except Exception as exc:  # never fail a request whose intent exists
            log.error("could not store idempotent responses", extra={"count": len(items), "error": repr(exc)})
        return [None] * len(items)
