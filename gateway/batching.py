"""Round trips shared by concurrent requests: what many requests send at once goes out as one batch.

    intents = IntentWriter(pool)
    outcome = await intents.create(new_intent)                               # in the next INSERT

    redis_batch = RedisBatch(redis)
    claimed = await redis_batch.execute("SET", key, b"1", "NX", "EX", 660)   # in the next pipeline
    claimed, marker = await redis_batch.execute_in_order(("SET", ...), ("GET", ...))  # in this order

    nonces = NonceRecorder(pool)
    fresh = await nonces.claim(api_key_id, nonce)                             # in the next INSERT

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

from pm.store import intents
from pm.store.pool import database_unavailable

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
        """Queue `item`; its reply. Awaits its future alone: no gather per request (measured: a gather's
        future and callbacks were about 5% of the gateway's CPU, most requests submit one item)."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        self._start_sender()
        return await future  # a cancelled request cancels its future: the sender skips it

    async def submit_in_order(self, items: list[Item]) -> list[Reply]:
        """Queue `items` one after another (sent in this order, in one batch or consecutive ones); their replies."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Reply]] = [loop.create_future() for _ in items]
        self._queued.extend(zip(items, futures, strict=True))
        self._start_sender()
        return list(await asyncio.gather(*futures))

    def _start_sender(self) -> None:
        # The sender drains `_queued` until empty and only then ends, with no await between its last
        # look and its end: an item queued before this is always seen by a running sender.
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued())

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
    """New intents of concurrent requests, claimed and inserted with one `pm.store.intents.create_intents`
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
            # The database is down or dropped the connection: each alone would fail the same way (or
            # wait for a connection each); every request answers 503 and the caller retries.
            if len(items) == 1 or database_unavailable(exc):
                return [exc] * len(items)
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

    async def execute_in_order(self, *commands: tuple[Any, ...]) -> list[Any]:
        """The commands' replies; Redis runs them in this order (not atomically: others may come between)."""
        return await self.submit_in_order(list(commands))

    async def send(self, items: list[tuple[Any, ...]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in items:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))


class NonceRecorder(Batcher[tuple[str, str], bool]):
    """Claims the nonces of signed requests with effects (other than POST /intents, whose nonce is claimed
    with its intent) in `pm.request_nonce`, for every request waiting at that moment in one statement:
    True for a nonce never seen, False for a replay. The table outlives a Redis that lost its data."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self._pool = pool

    async def claim(self, api_key_id: str, nonce: str) -> bool:
        return await self.submit((api_key_id, nonce))

    async def send(self, items: list[tuple[str, str]]) -> list[bool]:
        fresh = await intents.claim_nonces(self._pool, sorted(set(items)))
        replies: list[bool] = []
        for item in items:  # the same nonce twice in one batch: the first claims it, the second is a replay
            replies.append(item in fresh)
            fresh.discard(item)
        return replies
