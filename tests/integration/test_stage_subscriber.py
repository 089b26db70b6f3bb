"""A stage's FastStream subscriber on real Valkey hands the stage the entries as read (ids and field
maps), and FastStream's own batch parsing does not run: it JSON-encoded the whole batch into a body no
stage reads, after trying to JSON-decode every entry (about 7 µs an entry, on each of an intent's six
hops; consumers/runtime.parse_batch)."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import faststream.redis.parser.parsers as faststream_parsers

from consumers import runtime
from consumers.main import make_broker

ENTRIES = 3
WAIT_S = 10.0


class _RecordingRunner:
    """What `subscribe` needs of a StageRunner: the stage, a consumer name, and `process`."""

    def __init__(self, stream: str) -> None:
        self.stage = SimpleNamespace(
            name="probe", stream=stream, group="probe", batch_size=16, linger_ms=0, block_ms=100
        )
        self.consumer = "probe-1"
        self.batches: list[list[tuple[bytes, dict[bytes, bytes]]]] = []
        self.got_all = asyncio.Event()

    async def process(self, entries):
        self.batches.append(entries)
        if sum(len(batch) for batch in self.batches) >= ENTRIES:
            self.got_all.set()
        return SimpleNamespace(dependency_down=None)


async def test_the_stage_gets_the_raw_entries_and_faststream_parses_nothing(redis, redis_url, monkeypatch) -> None:
    def faststream_parsed(*args, **kwargs):
        raise AssertionError("FastStream's batch parser ran")

    monkeypatch.setattr(faststream_parsers, "_decode_batch_body_item", faststream_parsed)
    stream = f"test:{{{uuid.uuid4().hex[:10]}}}:probe"
    await redis.xgroup_create(stream, "probe", id="0", mkstream=True)
    sent = [await redis.xadd(stream, {"n": str(n), "kind": "probe"}) for n in range(ENTRIES)]

    runner = _RecordingRunner(stream)
    broker = make_broker(redis_url, graceful_timeout_s=1.0)
    runtime.subscribe(broker, runner)
    await broker.start()
    try:
        await asyncio.wait_for(runner.got_all.wait(), WAIT_S)
    finally:
        await broker.stop()
    received = [entry for batch in runner.batches for entry in batch]
    assert [entry_id for entry_id, _ in received] == sent
    assert [fields for _, fields in received] == [{b"n": str(n).encode(), b"kind": b"probe"} for n in range(ENTRIES)]
