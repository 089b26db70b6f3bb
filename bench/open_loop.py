"""Open-loop sending for bench/pipeline.py: intents at fixed times, whatever the answers.

A closed loop (C requests in flight, the next sent when one is answered) slows down with the system and so
hides queueing: its latency figures say little about a fixed offered load. Here intent i is due at
t0 + i / rate; each is sent when due on an idle keep-alive connection (a new one when none is idle, up to
`connections_max`), and its latency is counted from when it was due, not from when it was sent, so a
client that falls behind cannot hide latency (coordinated omission). The send lag (sent minus due) is
reported beside the latency: a large one means the client, not the fleet, was the bottleneck.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

CONNECTIONS_MAX = 2048  # in-flight requests the client allows itself before it calls the run failed
SCHEDULE_SLACK_S = 0.001  # sleep only when the next send is due later than this


def schedule(rate_per_s: float, seconds: float, start_s: float) -> list[float]:
    """The due times of an open-loop run: `rate_per_s` a second for `seconds`, evenly spaced."""
    if rate_per_s <= 0 or seconds <= 0:
        raise ValueError("rate and seconds must be positive")
    count = round(rate_per_s * seconds)
    return [start_s + index / rate_per_s for index in range(count)]


class ClientBehind(Exception):
    """More requests in flight than the client may open connections for: the offered load is not met."""


@dataclass
class OpenLoopResult:
    due_at: dict[int, float]  # index -> when it was due
    send_lag_s: list[float]  # per intent: sent minus due
    connections_opened: int


async def send_open_loop(
    due_times: list[float],
    connect: Callable[[], Any],
    send: Callable[[Any, int], Awaitable[None]],
    connections_max: int = CONNECTIONS_MAX,
) -> OpenLoopResult:
    """Call `send(connection, index)` for each due time when it is due, never waiting on earlier answers."""
    idle: list[Any] = []
    opened: list[Any] = []
    lags: list[float] = []
    in_flight = 0

    async def one(index: int) -> None:
        nonlocal in_flight
        connection = idle.pop() if idle else None
        if connection is None:
            connection = connect()
            opened.append(connection)
        try:
            await send(connection, index)
        finally:
            in_flight -= 1
            idle.append(connection)

    tasks: list[asyncio.Task[None]] = []
    try:
        for index, due in enumerate(due_times):
            wait_s = due - time.time()
            if wait_s > SCHEDULE_SLACK_S:
                await asyncio.sleep(wait_s)
            lags.append(max(0.0, time.time() - due))
            if in_flight >= connections_max:
                raise ClientBehind(f"{in_flight} requests in flight at intent {index}: the fleet is not keeping up")
            in_flight += 1
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(connection.close() for connection in opened), return_exceptions=True)
    return OpenLoopResult(dict(enumerate(due_times)), lags, len(opened))
