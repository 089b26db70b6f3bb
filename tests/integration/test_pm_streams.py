"""`pm streams` and `pm streams consumers --prune IDLE` against a real Valkey, as the installed command: per
stage the stream's length, the group's lag and pending count, the oldest pending entry's age, consumers
with their idle times and the dead-letter count; a prune deletes consumers idle longer than IDLE that hold
no pending entry and keeps one that holds entries (its pending entries stay); a bad IDLE or stage exits 2
in one line with nothing deleted. The status poller's own prune does the same, from its setting."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import types
import uuid
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from consumers.poller import prune_consumers_once
from pm.cli.common import CommandError
from pm.cli.streams import parse_idle_ms
from pm.config.settings import Settings
from pm.config.topology import Topology, parse_topology, renamed_document

PM = str(Path(sys.executable).parent / "pm")


def topology_file(directory: Path) -> tuple[Topology, Path]:
    document = renamed_document(f"t{uuid.uuid4().hex[:10]}:")
    path = directory / "streams.yaml"
    path.write_text(yaml.safe_dump(document))
    return parse_topology(document), path


def pm(streams_file: Path, redis_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    environment |= {"PM_REDIS_URL": redis_url, "PM_STREAMS_FILE": str(streams_file)}
    return subprocess.run([PM, *arguments], env=environment, capture_output=True, text=True, timeout=120)


async def consumers_of(redis, stream: str, group: str) -> dict[str, int]:
    return {c["name"].decode(): int(c["pending"]) for c in await redis.xinfo_consumers(stream, group)}


async def staged(redis, topology: Topology) -> tuple[str, str]:
    """Three entries in the validation stream, two read by `busy` (pending), an empty `gone` consumer,
    a dead letter; returns (stream, group)."""
    stage = topology.stage("validation")
    await redis.xgroup_create(stage.stream, stage.group, id="0", mkstream=True)
    for number in range(3):
        await redis.xadd(stage.stream, {"intent": f"{number}"})
    await redis.xreadgroup(stage.group, "busy", {stage.stream: ">"}, count=2)
    await redis.xgroup_createconsumer(stage.stream, stage.group, "gone")
    await redis.xadd(stage.dead_letter_stream, {"error": "boom"})
    return stage.stream, stage.group


async def test_streams_shows_each_stage_and_prune_deletes_only_idle_empty_consumers(redis, redis_url, tmp_path) -> None:
    topology, streams_file = topology_file(tmp_path)
    stream, group = await staged(redis, topology)
    await asyncio.sleep(1.2)  # every consumer idle for more than a second

    shown = await asyncio.to_thread(pm, streams_file, redis_url, "streams", "--json")
    assert shown.returncode == 0, shown.stderr
    validation = json.loads(shown.stdout)["validation"]
    assert (validation["length"], validation["lag"], validation["pending"], validation["dead_letters"]) == (3, 1, 2, 1)
    assert 1_000 <= validation["oldest_pending_age_ms"] < 60_000
    assert {c["name"]: c["pending"] for c in validation["consumers"]} == {"busy": 2, "gone": 0}
    assert all(c["idle_ms"] >= 1_000 for c in validation["consumers"])
    text = await asyncio.to_thread(pm, streams_file, redis_url, "streams")
    row = next(line for line in text.stdout.splitlines() if line.startswith("validation "))
    assert row.split()[1:4] == [stream, "3", "1"] and row.split()[-2:] == ["2", "1"], row
    assert "busy  pending=2  idle=" in text.stdout

    # Bad input: one line, exit 2, nothing deleted.
    for arguments in (["--prune", "5x"], ["nosuchstage", "--prune", "1s"]):
        refused = await asyncio.to_thread(pm, streams_file, redis_url, "streams", "consumers", *arguments)
        assert refused.returncode == 2, refused
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert await consumers_of(redis, stream, group) == {"busy": 2, "gone": 0}

    # Idle longer than a minute: none is. Longer than a second: `gone`, not `busy` (it holds entries).
    kept = await asyncio.to_thread(pm, streams_file, redis_url, "streams", "consumers", "validation", "--prune", "1m")
    assert kept.returncode == 0 and "0 consumer(s) idle longer than 1m" in kept.stdout, kept.stdout + kept.stderr
    pruned = await asyncio.to_thread(pm, streams_file, redis_url, "streams", "consumers", "--prune", "1s")
    assert pruned.returncode == 0, pruned.stderr
    assert "pruned gone" in pruned.stdout and "1 consumer(s) idle longer than 1s" in pruned.stdout
    assert await consumers_of(redis, stream, group) == {"busy": 2}
    assert (await redis.xpending(stream, group))["pending"] == 2


async def test_streams_shows_the_history_stage_like_the_others(redis, redis_url, tmp_path) -> None:
    """The history group (fed by the outbox worker) is a stage of the topology: `pm streams` lists it."""
    topology, streams_file = topology_file(tmp_path)
    stage = topology.final_stage
    assert stage.name == "history"
    await redis.xgroup_create(stage.stream, stage.group, id="0", mkstream=True)
    for number in range(2):
        await redis.xadd(stage.stream, {"intent": f"{number}"})
    await redis.xreadgroup(stage.group, "history-1", {stage.stream: ">"}, count=1)

    shown = await asyncio.to_thread(pm, streams_file, redis_url, "streams", "--json")
    assert shown.returncode == 0, shown.stderr
    history = json.loads(shown.stdout)["history"]
    assert (history["length"], history["lag"], history["pending"], history["dead_letters"]) == (2, 1, 1, 0)
    assert [c["name"] for c in history["consumers"]] == ["history-1"]
    text = await asyncio.to_thread(pm, streams_file, redis_url, "streams")
    row = next(line for line in text.stdout.splitlines() if line.startswith("history "))
    assert row.split()[1:4] == [stage.stream, "2", "1"], row


async def test_the_poller_prunes_idle_empty_consumers_from_its_setting(redis, tmp_path) -> None:
    topology, _ = topology_file(tmp_path)
    stream, group = await staged(redis, topology)
    context = types.SimpleNamespace(redis=redis, topology=topology, consumer_prune_idle_s=60.0)
    assert await prune_consumers_once(context) == 0  # nobody idle a minute yet
    await asyncio.sleep(1.2)
    before = REGISTRY.get_sample_value("pm_stream_consumers_pruned_total", {"stage": "validation"}) or 0.0
    context.consumer_prune_idle_s = 1.0
    assert await prune_consumers_once(context, round_max=10) == 1
    assert await consumers_of(redis, stream, group) == {"busy": 2}
    assert REGISTRY.get_sample_value("pm_stream_consumers_pruned_total", {"stage": "validation"}) == before + 1
    # Stages whose streams do not exist yet have no consumers to prune.
    assert await prune_consumers_once(context) == 0


def test_idle_times_and_the_setting() -> None:
    assert parse_idle_ms("90s") == 90_000 and parse_idle_ms("2h") == 7_200_000 and parse_idle_ms("1500ms") == 1_500
    for bad in ("", "5", "5x", "-1s", "0s", "400d"):
        with pytest.raises(CommandError):
            parse_idle_ms(bad)
    assert Settings().stream_consumer_prune_idle_s == 3_600
    with pytest.raises(ValueError):
        Settings(stream_consumer_prune_idle_s=10)
