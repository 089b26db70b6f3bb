"""Dead letters on real PostgreSQL, Valkey and the postgres ledger: a poison intent is dead-lettered once
and the status poller does not re-drive it (flagged `needs_operator`) however many rounds pass with a
small `stuck_after_s`; once the cause is gone, `pm dlq replay` brings it to its final state with exact
balances and a clean ledger, a second replay publishes nothing, and replaying a final intent is refused.
`pm dlq list/show/drop` show and delete dead letters; a malformed one blocks `replay --all` until
dropped. A dead-letter stream stays near its cap (XADD MAXLEN ~) and the poller's gauge shows its length."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import channels
from consumers.poller import measure_once
from consumers.runtime import StageRunner
from pm.config.topology import Topology, parse_topology, renamed_document
from pm.domain.intent import Intent, OperationType, State
from pm.redis import streams
from tests.support.pipeline import Pipeline, open_pipeline

PM = str(Path(sys.executable).parent / "pm")
P2P = OperationType.P2P_TRANSFER
_users = itertools.count(70_000)
RunPm = Callable[..., subprocess.CompletedProcess[str]]  # `pm` with this test's settings: arguments -> result


def topology_file(directory: Path, **stage_overrides: object) -> tuple[Topology, Path]:
    """A topology of the test's own, and the file `pm` reads it from (PM_STREAMS_FILE)."""
    document = renamed_document(f"t{uuid.uuid4().hex[:10]}:", **stage_overrides)
    document["poller"]["interval_ms"] = 200  # many poller rounds in a few seconds
    path = directory / "streams.yaml"
    path.write_text(yaml.safe_dump(document))
    return parse_topology(document), path


def pm(streams_file: Path, database_url: str, redis_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    environment |= {"PM_DATABASE_URL": database_url, "PM_REDIS_URL": redis_url, "PM_STREAMS_FILE": str(streams_file)}
    return subprocess.run([PM, *arguments], env=environment, capture_output=True, text=True, timeout=120)


def redriven_total(state: str) -> float:
    return REGISTRY.get_sample_value("pm_poller_redriven_total", {"state": state}) or 0.0


async def stream_added(redis, stream: str) -> int:
    """Entries ever added to a stream: unlike its length, trimming does not lower it."""
    return int((await redis.xinfo_stream(stream))["entries-added"])


@contextlib.contextmanager
def settlement_raising_for(intent_id: uuid.UUID) -> Iterator[None]:
    """INTERNAL_P2P's settle raises for this one intent (a poison intent) until the block ends."""
    p2p = channels.REGISTRY["INTERNAL_P2P"]
    original_settle = p2p.settle

    def settle(intent):
        if intent.id == intent_id:
            raise RuntimeError("poisoned intent for the test")
        return original_settle(intent)

    p2p.settle = settle  # type: ignore[method-assign]
    try:
        yield
    finally:
        p2p.settle = original_settle  # type: ignore[method-assign]


async def dead_letter_once(pipeline: Pipeline, poisoned: Intent) -> None:
    """Publishes the poison intent and runs the stages (no poller yet) until settlement dead-letters it,
    exactly once: flagged `needs_operator`, still AUTHORIZED, never re-driven."""
    redis, pool, settlement = pipeline.context.redis, pipeline.context.pool, pipeline.topology.stage("settlement")
    await redis.xadd(pipeline.topology.first_stage.stream, streams.entry_fields(poisoned))
    async with pipeline.stages():  # no poller yet: dead-lettered exactly once
        for _ in range(600):  # up to a minute on a busy machine
            pending = (await redis.xpending(settlement.stream, settlement.group))["pending"]
            if await redis.xlen(settlement.dead_letter_stream) and not pending:
                break
            await asyncio.sleep(0.1)
    ((_, dead),) = await redis.xrange(settlement.dead_letter_stream)
    assert b"poisoned intent for the test" in dead[b"error"] and int(dead[b"deliveries"]) >= 2
    row = await pool.fetchrow("SELECT state, needs_operator, redriven_at FROM pm.intent WHERE id = $1", poisoned.id)
    assert (row["state"], row["needs_operator"], row["redriven_at"]) == ("AUTHORIZED", True, None)


async def assert_the_poller_skips_the_flagged(pipeline: Pipeline, poisoned: Intent, alice: int, bob: int) -> None:
    """The poller runs many rounds with stuck_after_s = 1: it re-drives an intent whose entry was lost (so
    it is running), never the flagged one."""
    redis, pool, settlement = pipeline.context.redis, pipeline.context.pool, pipeline.topology.stage("settlement")
    redriven_before = redriven_total("AUTHORIZED")
    lost = await pipeline.submit(P2P, 300, alice, bob, publish=False)
    async with pipeline.stages(with_poller=True):
        await pipeline.wait_finished([lost.id], timeout_s=60)
        await asyncio.sleep(3)  # 15 more poller rounds, each past the poisoned intent's stuck_after_s
    row = await pool.fetchrow("SELECT needs_operator, redriven_at FROM pm.intent WHERE id = $1", poisoned.id)
    assert (row["needs_operator"], row["redriven_at"]) == (True, None)
    assert redriven_total("AUTHORIZED") == redriven_before
    assert await redis.xlen(settlement.dead_letter_stream) == 1
    assert (await redis.xpending(settlement.stream, settlement.group))["pending"] == 0
    assert await pipeline.balance(alice) == (5_000 - 300, 666)  # its money still held, not lost


def needs_operator(state: str) -> float | None:
    return REGISTRY.get_sample_value("pm_intents_needs_operator", {"state": state})


async def assert_the_flag_is_measured_whatever_the_dead_letters(pipeline: Pipeline) -> None:
    """The flagged intent counts in pm_intents_needs_operator (alert PmHeldIntentsNeedOperator), also once
    its dead letter is gone (a flush, `pm dlq drop`, trimming): the dead-letter gauge alone would say
    nothing is wrong while its hold runs out. It is not in the open intents' age (PmIntentsStuck)."""
    redis, settlement = pipeline.context.redis, pipeline.topology.stage("settlement")
    await measure_once(pipeline.context)
    assert needs_operator("AUTHORIZED") == 1 and needs_operator("CLEARED") == 0
    oldest = REGISTRY.get_sample_value("pm_intent_needs_operator_oldest_seconds", {"state": "AUTHORIZED"})
    assert oldest is not None and oldest > 0
    assert REGISTRY.get_sample_value("pm_intent_open_oldest_seconds", {"state": "AUTHORIZED"}) == 0
    aside = f"{settlement.dead_letter_stream}:aside"
    await redis.rename(settlement.dead_letter_stream, aside)  # as if it were gone
    try:
        await measure_once(pipeline.context)
        assert REGISTRY.get_sample_value("pm_dead_letter_entries", {"stage": settlement.name}) == 0
        assert needs_operator("AUTHORIZED") == 1
    finally:
        await redis.rename(aside, settlement.dead_letter_stream)


async def replay_twice_publishing_once(run_pm: RunPm, pipeline: Pipeline, poisoned: Intent) -> int:
    """The operator replays it twice (the stages stopped, so it is still AUTHORIZED at the second): one
    entry is published, not two. Returns the entries added to settlement's stream before the replays."""
    settlement = pipeline.topology.stage("settlement")
    added_before = await stream_added(pipeline.context.redis, settlement.stream)
    first = await asyncio.to_thread(run_pm, "dlq", "replay", "settlement", str(poisoned.id))
    assert first.returncode == 0, first.stderr
    assert f"replayed {poisoned.id} (AUTHORIZED) to settlement" in first.stdout
    assert "1 dead letter(s) deleted" in first.stdout
    second = await asyncio.to_thread(run_pm, "dlq", "replay", "settlement", str(poisoned.id), "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {
        "replayed": [],
        "not_flagged": [str(poisoned.id)],
        "deleted_dead_letters": 0,
    }
    assert await stream_added(pipeline.context.redis, settlement.stream) == added_before + 1
    return added_before


async def assert_the_replay_settles_it(pipeline: Pipeline, poisoned: Intent, alice: int, bob: int) -> None:
    """With no poller, the replayed entry alone brings it to its end: exact balances, a clean ledger."""
    redis, pool, settlement = pipeline.context.redis, pipeline.context.pool, pipeline.topology.stage("settlement")
    async with pipeline.stages():  # no poller: the replayed entry alone brings it to its end
        finished = (await pipeline.wait_finished([poisoned.id], timeout_s=60))[poisoned.id]
    assert finished.state == State.SETTLED
    assert await pool.fetchval("SELECT needs_operator FROM pm.intent WHERE id = $1", poisoned.id) is False
    await measure_once(pipeline.context)
    assert needs_operator("AUTHORIZED") == 0
    assert await redis.xlen(settlement.dead_letter_stream) == 0
    assert await pipeline.balance(alice) == (5_000 - 300 - 666, 0)
    assert await pipeline.balance(bob) == (300 + 666, 0)
    report = await pipeline.check()
    assert report.ok, report.problems
    assert [(t.posted_net, t.pending_net) for t in report.transit] == [(0, 0)]


async def assert_a_final_intent_is_refused(run_pm: RunPm, pipeline: Pipeline, poisoned: Intent, added: int) -> None:
    """Replaying a final intent is refused, and nothing changes: `added` entries in settlement's stream."""
    refused = await asyncio.to_thread(run_pm, "dlq", "replay", "settlement", str(poisoned.id))
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "SETTLED (final)" in line, line
    assert await stream_added(pipeline.context.redis, pipeline.topology.stage("settlement").stream) == added
    assert await pipeline.states(poisoned.id) == [
        "CREATED",
        "VALIDATED",
        "PRICED",
        "CLEARED",
        "AUTHORIZED",
        "SETTLED",
    ]


async def test_a_poison_intent_is_not_redriven_until_an_operator_replays_it(
    fresh_database, redis_url, tmp_path
) -> None:
    alice, bob = next(_users), next(_users)
    topology, streams_file = topology_file(tmp_path, claim_idle_ms=200, max_deliveries=2, stuck_after_s=1)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:

        def run_pm(*arguments: str) -> subprocess.CompletedProcess[str]:
            return pm(streams_file, pipeline.database_url, redis_url, *arguments)

        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 5_000)).id])
        poisoned = await pipeline.submit(P2P, 666, alice, bob, publish=False)
        with settlement_raising_for(poisoned.id):
            await dead_letter_once(pipeline, poisoned)
            await assert_the_poller_skips_the_flagged(pipeline, poisoned, alice, bob)
            await assert_the_flag_is_measured_whatever_the_dead_letters(pipeline)

        # The cause is gone: the operator replays it, twice; it settles; a third replay is refused.
        added_before = await replay_twice_publishing_once(run_pm, pipeline, poisoned)
        await assert_the_replay_settles_it(pipeline, poisoned, alice, bob)
        await assert_a_final_intent_is_refused(run_pm, pipeline, poisoned, added_before + 1)


async def replay_all_with_a_flagged_intent_whose_dead_letter_is_gone(
    run_pm: RunPm, pipeline: Pipeline, intent: Intent
) -> int:
    """`replay --all` replays the dead-lettered intent and one flagged whose dead letter is gone (a flush, a
    drop, trimming), found in PostgreSQL; returns the validation stream's length before."""
    redis, pool, validation = pipeline.context.redis, pipeline.context.pool, pipeline.topology.first_stage
    orphan = await pipeline.submit(P2P, 200, next(_users), next(_users), publish=False)
    await pool.execute("UPDATE pm.intent SET needs_operator = true WHERE id = $1", orphan.id)
    published_before = await redis.xlen(validation.stream)
    replayed = await asyncio.to_thread(run_pm, "dlq", "replay", validation.name, "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {intent.id} (CREATED) to validation" in replayed.stdout
    assert f"replayed {orphan.id} (CREATED) to validation" in replayed.stdout
    assert await redis.xlen(validation.stream) == published_before + 2
    published = [streams.decode_entry(entry).id for _, entry in (await redis.xrange(validation.stream))[-2:]]
    assert sorted(published) == sorted([intent.id, orphan.id])
    assert await redis.xlen(validation.dead_letter_stream) == 0
    for replayed_id in (intent.id, orphan.id):
        assert not await pool.fetchval("SELECT needs_operator FROM pm.intent WHERE id = $1", replayed_id)
    return published_before


async def test_list_show_drop_and_replay_all(fresh_database, redis_url, tmp_path) -> None:
    topology, streams_file = topology_file(tmp_path)
    validation = topology.first_stage
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        redis, pool = pipeline.context.redis, pipeline.context.pool

        def run_pm(*arguments: str) -> subprocess.CompletedProcess[str]:
            return pm(streams_file, pipeline.database_url, redis_url, *arguments)

        intent = await pipeline.submit(P2P, 100, next(_users), next(_users), publish=False)
        runner = StageRunner(validation, pipeline.context)
        fields = {key.encode(): value for key, value in streams.entry_fields(intent).items()}
        await runner._dead_letter([(b"9-1", fields, "Traceback ...\nRuntimeError: boom", 5)])
        await runner.process([(b"9-2", {b"intent": b"{not json"})])
        ((malformed_id, _),) = [
            entry
            for entry in await redis.xrange(validation.dead_letter_stream)
            if b"intent" in entry[1] and entry[1][b"intent"] == b"{not json"
        ]

        listed = await asyncio.to_thread(run_pm, "dlq", "list", validation.name, "--json")
        assert listed.returncode == 0, listed.stderr
        shown = json.loads(listed.stdout)
        assert shown["flagged_intents"] == 1
        letters = shown["stages"][validation.name]["newest"]
        assert shown["stages"][validation.name]["entries"] == 2
        assert [(letter["intent_id"], (letter["intent"] or {}).get("state")) for letter in letters] == [
            (None, None), (str(intent.id), "CREATED"),
        ]  # fmt: skip
        text = await asyncio.to_thread(run_pm, "dlq", "list")
        assert "RuntimeError: boom" in text.stdout and "(malformed entry)" in text.stdout
        show = await asyncio.to_thread(run_pm, "dlq", "show", str(intent.id))
        assert show.returncode == 0 and "flagged for an operator" in show.stdout and "RuntimeError: boom" in show.stdout
        assert (await asyncio.to_thread(run_pm, "dlq", "show", str(uuid.uuid4()))).returncode == 1

        # A malformed dead letter names no intent: `replay --all` refuses, changing nothing, until it is dropped.
        refused = await asyncio.to_thread(run_pm, "dlq", "replay", validation.name, "--all")
        assert refused.returncode == 1 and "names no intent" in refused.stderr, refused.stderr
        assert await redis.xlen(validation.dead_letter_stream) == 2
        assert await pool.fetchval("SELECT needs_operator FROM pm.intent WHERE id = $1", intent.id)
        dropped = await asyncio.to_thread(run_pm, "dlq", "drop", validation.name, malformed_id.decode())
        assert dropped.returncode == 0 and "dropped 1 dead letter(s)" in dropped.stdout, dropped.stderr

        published_before = await replay_all_with_a_flagged_intent_whose_dead_letter_is_gone(run_pm, pipeline, intent)

        # A dead letter left behind by a replay that died after its commit: deleted, nothing published.
        await redis.xadd(validation.dead_letter_stream, {**fields, b"error": b"stale", b"deliveries": b"5"})
        again = await asyncio.to_thread(run_pm, "dlq", "replay", validation.name, "--all", "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout) == {"replayed": [], "not_flagged": [str(intent.id)], "deleted_dead_letters": 1}
        assert await redis.xlen(validation.dead_letter_stream) == 0

        # Usage errors: exit 2, nothing changed.
        for arguments in (
            ("replay", "no-such-stage", "--all"),
            ("replay", validation.name),
            ("drop", validation.name, "x"),
        ):
            wrong = await asyncio.to_thread(run_pm, "dlq", *arguments)
            assert wrong.returncode in (1, 2) and len(wrong.stderr.strip().splitlines()) == 1, (arguments, wrong.stderr)
        assert await redis.xlen(validation.stream) == published_before + 2


async def test_a_dead_letter_stream_stays_near_its_cap_and_the_gauge_shows_its_length(
    fresh_database, redis_url, tmp_path
) -> None:
    topology, _ = topology_file(tmp_path)
    validation = topology.first_stage
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        pipeline.context.dead_letter_entries_max = 100
        runner = StageRunner(validation, pipeline.context)
        for batch in range(20):  # 2,000 dead letters
            entries = [(f"{batch + 1}-{n}".encode(), {b"intent": b"{not json"}) for n in range(100)]
            assert (await runner.process(entries)).malformed == 100
        length = await pipeline.context.redis.xlen(validation.dead_letter_stream)
        # Approximate trimming removes whole stream nodes (100 entries each by default): near the cap.
        assert 100 <= length <= 300, length
        newest = await pipeline.context.redis.xrevrange(validation.dead_letter_stream, count=1)
        assert newest[0][1][b"source_entry_id"] == b"20-99"  # the oldest go, the newest stay
        await measure_once(pipeline.context)
        assert REGISTRY.get_sample_value("pm_dead_letter_entries", {"stage": validation.name}) == length
        assert REGISTRY.get_sample_value("pm_dead_letter_entries", {"stage": "settlement"}) == 0
