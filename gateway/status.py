"""One Redis pub/sub connection per gateway process, shared by every request that waits for an
intent's status (Prefer: wait, and the SSE stream of GET /intents/{id}/events).

    async with hub.subscribe(topology.channel_for(intent.id)) as subscription:
        ...                                       # SUBSCRIBE is confirmed by Redis before this line
        if await subscription.wait(timeout_s):
            statuses, resync = subscription.drain()

The outbox worker publishes every transition on `intent.{id}` as `IntentEvent.to_json()` (event_id,
intent_id, version, state, error_code, error_message, created_at; consumers/outbox_feed.py). The hub subscribes a
channel when its first subscriber arrives and unsubscribes it when the last one leaves; SUBSCRIBE and
UNSUBSCRIBE requests that arrive together go out as one command each. One reader task reads the
connection and hands every message to the channel's subscribers, parsed once.

Pub/sub loses messages by design (a reconnect, a slow subscriber). Whenever that may have happened the
subscriber is told to `resync`, i.e. to read the truth from PostgreSQL; callers do that at the end of a
wait anyway, so a lost message costs latency, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from pm.config.constants import (
    STATUS_RECONNECT_DELAY_S,
    STATUS_RECONNECT_DELAY_S_MAX,
    STATUS_SUBSCRIBE_TIMEOUT_S,
    STATUS_SUBSCRIBER_BUFFER_MAX,
)
from pm.redis.wire import is_cluster

log = logging.getLogger("pm.gateway.status")


class Subscription:
    """One waiter's view of one channel: the statuses received since it last drained them."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._statuses: collections.deque[dict[str, Any]] = collections.deque()
        self._resync = False
        self._wakeup = asyncio.Event()

    def deliver(self, status: dict[str, Any]) -> None:
        if len(self._statuses) >= STATUS_SUBSCRIBER_BUFFER_MAX:
            # A subscriber this far behind reads PostgreSQL instead; memory stays bounded.
            self.resync()
            return
        self._statuses.append(status)
        self._wakeup.set()

    def resync(self) -> None:
        self._statuses.clear()
        self._resync = True
        self._wakeup.set()

    async def wait(self, timeout_s: float) -> bool:
        """True when statuses (or a resync) are waiting; False after `timeout_s` without any."""
        if self._statuses or self._resync:
            return True
        self._wakeup.clear()
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    def drain(self) -> tuple[list[dict[str, Any]], bool]:
        """The statuses received so far, oldest first, and whether PostgreSQL must be read instead."""
        statuses = list(self._statuses)
        resync = self._resync
        self._statuses.clear()
        self._resync = False
        self._wakeup.clear()
        return statuses, resync


class StatusHub:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pubsub: PubSub = redis.pubsub() if not is_cluster(redis) else None  # type: ignore[assignment]
        self._subscribers: dict[bytes, set[Subscription]] = {}
        # Per channel, one future per SUBSCRIBE sent and not yet confirmed, in sending order: Redis
        # confirms each SUBSCRIBE of a channel once, in order, so the n-th confirmation is the n-th send.
        self._confirmations: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        self._commands: list[tuple[str, bytes]] = []
        self._sender: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._callback_connection: Any = None
        # Set once the connection is first made; the sender waits for it, so the reader and the sender
        # never race to create the connection (PubSub would then open two and lose one).
        self._connected = asyncio.Event()
        self._closing = False

    async def start(self) -> None:
        assert self._reader is None, "started twice"
        if self._pubsub is None:
            # A cluster delivers every PUBLISH to the subscribers of every node (classic pub/sub is
            # broadcast on the cluster bus), so one node serves all the app's channels: its default node.
            await self._redis.initialize()  # type: ignore[attr-defined]
            self._pubsub = self._redis.pubsub(node=self._redis.get_default_node())  # type: ignore[call-arg, attr-defined]
        self._reader = asyncio.create_task(self._read_forever(), name="status-hub-reader")

    async def close(self) -> None:
        for task in (self._reader, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.resync()
        if self._pubsub is not None:
            await self._pubsub.aclose()

    @property
    def closing(self) -> bool:
        """True once the app shuts down: waiters answer with what PostgreSQL has and end."""
        return self._closing

    def begin_closing(self) -> None:
        """Wake every waiter now, so graceful shutdown does not wait out long polls and SSE streams."""
        self._closing = True
        self._resync_everyone()

    @property
    def channels(self) -> int:
        """How many channels this process is subscribed to (or subscribing)."""
        return len(self._subscribers)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        key = channel.encode()
        subscription = Subscription(channel)
        subscribers = self._subscribers.get(key)
        if subscribers is None:
            self._subscribers[key] = {subscription}
            confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._confirmations.setdefault(key, collections.deque()).append(confirmed)
            self._send("SUBSCRIBE", key)
        else:
            subscribers.add(subscription)
            pending = self._confirmations.get(key)
            # Already subscribed, or its SUBSCRIBE is on the way: wait for the same confirmation.
            confirmed = pending[-1] if pending else None
        try:
            if confirmed is not None:
                await self._confirmed(confirmed, subscription)
            yield subscription
        finally:
            subscribers = self._subscribers.get(key)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[key]
                    self._send("UNSUBSCRIBE", key)

    async def _confirmed(self, confirmed: asyncio.Future[None], subscription: Subscription) -> None:
        try:
            async with asyncio.timeout(STATUS_SUBSCRIBE_TIMEOUT_S):
                await asyncio.shield(confirmed)
        except TimeoutError:
            log.warning("status subscription not confirmed in time", extra={"channel": subscription.channel})
            subscription.resync()

    def _send(self, command: str, key: bytes) -> None:
        self._commands.append((command, key))
        # The sender drains `_commands` until empty and only then ends; there is no await between its
        # last look and its end, so a command added here is always seen by a running sender.
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued(), name="status-hub-sender")

    async def _send_queued(self) -> None:
        await self._connected.wait()
        while self._commands:
            commands, self._commands = self._commands, []
            for command, keys in _runs(commands):
                try:
                    if command == "SUBSCRIBE":
                        await self._pubsub.subscribe(*keys)
                    else:
                        await self._pubsub.unsubscribe(*keys)
                except Exception as exc:  # any failure means the same: resync everyone
                    log.warning("status subscription command failed", extra={"error": repr(exc)})
                    self._resync_everyone()

    async def _read_forever(self) -> None:
        # Runs for the life of the app: cancelled by close().
        delay_s = STATUS_RECONNECT_DELAY_S
        while True:
            try:
                if not self._connected.is_set():
                    await self._pubsub.connect()
                    self._watch_reconnects()
                    self._connected.set()
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection failed; back off and reconnect
                log.warning("status connection failed", extra={"error": repr(exc), "retry_in_s": delay_s})
                self._resync_everyone()
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, STATUS_RECONNECT_DELAY_S_MAX)
                continue
            delay_s = STATUS_RECONNECT_DELAY_S
            if message is not None:
                self._dispatch(message)

    def _watch_reconnects(self) -> None:
        connection = self._pubsub.connection
        if connection is not None and connection is not self._callback_connection:
            # redis-py re-subscribes every channel on a reconnect; messages sent meanwhile are lost.
            connection.register_connect_callback(self._on_reconnect)
            self._callback_connection = connection

    async def _on_reconnect(self, connection: Any) -> None:
        log.info("status connection re-established")
        self._resync_everyone()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        key = message["channel"]
        if kind == "message":
            subscribers = self._subscribers.get(key)
            if not subscribers:
                return
            status = _parse_status(message["data"])
            if status is None:
                log.warning("malformed status message", extra={"channel": key.decode(errors="replace")})
                return
            for subscription in subscribers:
                subscription.deliver(status)
        elif kind == "subscribe":
            pending = self._confirmations.get(key)
            if pending:
                future = pending.popleft()
                if not future.done():
                    future.set_result(None)
                if not pending:
                    del self._confirmations[key]

    def _resync_everyone(self) -> None:
        for pending in self._confirmations.values():
            for future in pending:
                if not future.done():
                    future.set_result(None)
        self._confirmations.clear()
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.resync()


def _parse_status(data: bytes) -> dict[str, Any] | None:
    """A status message (`IntentEvent.to_json()`, from the outbox worker), or None when it is not one."""
    try:
        status = orjson.loads(data)
    except ValueError:
        return None
    if not isinstance(status, dict) or not isinstance(status.get("version"), int):
        return None
    if not isinstance(status.get("state"), str):
        return None
    return status


def _runs(commands: list[tuple[str, bytes]]) -> list[tuple[str, list[bytes]]]:
    """Consecutive commands of one kind merged (order kept): SUBSCRIBE a, SUBSCRIBE b -> SUBSCRIBE a b."""
    runs: list[tuple[str, list[bytes]]] = []
    for command, key in commands:
        if runs and runs[-1][0] == command:
            runs[-1][1].append(key)
        else:
            runs.append((command, [key]))
    return runs
