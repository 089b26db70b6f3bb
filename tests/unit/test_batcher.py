"""gateway.batching.Batcher without servers: concurrent callers share a batch, each gets its own reply or
error, and a caller cancelled while its batch is on the wire costs the others nothing."""

from __future__ import annotations

import asyncio

import pytest

from gateway.batching import Batcher


class _Doubler(Batcher[int, int]):
    """Sends a batch after `gate` opens; fails an item of -1 alone."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()

    async def send(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        await self.gate.wait()
        return [ValueError("refused") if item == -1 else item * 2 for item in items]


async def test_concurrent_callers_share_batches_and_get_their_own_replies() -> None:
    batcher = _Doubler()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the sender takes [1]; the next ones queue behind it
    rest = [asyncio.create_task(batcher.submit(n)) for n in (2, 3, -1)]
    in_order = asyncio.create_task(batcher.submit_in_order([4, 5]))
    await asyncio.sleep(0)
    batcher.gate.set()
    assert await first == 2
    assert await rest[0] == 4 and await rest[1] == 6
    with pytest.raises(ValueError, match="refused"):
        await rest[2]
    assert await in_order == [8, 10]
    assert batcher.batches == [[1], [2, 3, -1, 4, 5]]


async def test_a_cancelled_caller_is_skipped_and_the_others_are_answered() -> None:
    batcher = _Doubler()
    cancelled = asyncio.create_task(batcher.submit(1))
    kept = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    batcher.gate.set()
    assert await kept == 4
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert batcher._sender is not None
    await batcher._sender  # the sender ended cleanly: no reply set on a cancelled future
    assert batcher._sender.exception() is None
    assert await batcher.submit(3) == 6  # and a new one starts for the next request
