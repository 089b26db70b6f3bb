"""`streams.yaml`, read into typed objects. The only reader of that file."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from pm.config.constants import STAGE_REDIS_SOCKET_TIMEOUT_S
from pm.domain.intent import TERMINAL_STATES, WAITING_STATES, State

TOPOLOGY_FILE = Path(__file__).resolve().parents[2] / "streams.yaml"
STAGE_KEYS = {
    "handler", "stream", "group", "dead_letter_stream", "input_states", "connector_for",
    "batch_size", "block_ms", "linger_ms", "claim_idle_ms", "max_deliveries", "stuck_after_s",
}  # fmt: skip
LINGER_MS_MAX = 1000
# A blocking read must end well inside the stage's Redis socket timeout (STAGE_REDIS_SOCKET_TIMEOUT_S, 10 s),
# or an idle stage's read would be cut as a dead connection.
BLOCK_MS_MAX = 5000
assert BLOCK_MS_MAX * 2 <= STAGE_REDIS_SOCKET_TIMEOUT_S * 1000
BATCH_SIZE_MAX = 8189  # one ledger request per batch: never more events than TigerBeetle takes


class TopologyError(ValueError):
    """streams.yaml is malformed; the message names the stage and field."""


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    handler: str
    stream: str
    group: str
    dead_letter_stream: str
    input_states: tuple[State, ...]
    batch_size: int
    block_ms: int
    # After a batch smaller than batch_size, wait until this long after its start before reading again.
    linger_ms: int
    claim_idle_ms: int
    max_deliveries: int
    stuck_after_s: int
    # A PSP connector (issue 5) is fed by a channel, not by a state: the channel's name, else None.
    connector_for: str | None = None


@dataclass(frozen=True, slots=True)
class PollerConfig:
    interval_ms: int
    batch_size: int
    trim_interval_ms: int
    lag_interval_ms: int


@dataclass(frozen=True, slots=True)
class Topology:
    stages: dict[str, Stage]
    poller: PollerConfig
    status_channel: str
    # Where the outbox worker announces intents flagged for an operator (pm/store/reviews.py): a stream, so an
    # alerting consumer that was away reads what it missed.
    review_stream: str = "pm:{streams}:reviews"
    # The key whose absence tells the status poller that Redis lost its data (consumers/poller.py).
    data_marker: str = "pm:{streams}:data-marker"

    def stream_keys(self) -> list[str]:
        """Every stream and the data marker: the keys one script or transaction may touch together (a
        stage's publish-and-ack writes the next stages' streams; a dead letter moves between two)."""
        keys = [key for stage in self.stages.values() for key in (stage.stream, stage.dead_letter_stream)]
        return [*keys, self.review_stream, self.data_marker]

    def cluster_problem(self) -> str | None:
        """Why these streams cannot run on a Redis Cluster (None: they can): every stream key must carry
        one and the same hash tag, so that they all share a slot."""
        tags = {hash_tag(key) for key in self.stream_keys()}
        if len(tags) == 1 and None not in tags:
            return None
        untagged = [key for key in self.stream_keys() if hash_tag(key) is None]
        return (
            "on a Redis Cluster every stream in streams.yaml (and review_stream, data_marker) must carry the"
            f" same hash tag, e.g. pm:{{streams}}:intents:created; found tags {sorted(t for t in tags if t)}"
            + (f", untagged {untagged[:3]}" if untagged else "")
        )

    def stage(self, name: str) -> Stage:
        try:
            return self.stages[name]
        except KeyError:
            raise TopologyError(f"no stage {name!r} in streams.yaml; stages: {sorted(self.stages)}") from None

    def stage_for_state(self, state: State) -> Stage:
        """The stage that consumes intents in `state` (every state has exactly one; the final ones, history)."""
        for stage in self.stages.values():
            if state in stage.input_states:
                return stage
        raise TopologyError(f"no stage consumes state {state}")

    @property
    def first_stage(self) -> Stage:
        return self.stage_for_state(State.CREATED)

    @property
    def final_stage(self) -> Stage:
        """The stage of final intents (history): the outbox worker feeds it, the poller re-drives to it."""
        return self.stage_for_state(State.SETTLED)

    def connector_of(self, channel: str) -> Stage:
        """The PSP connector stage a channel puts its jobs on."""
        for stage in self.stages.values():
            if stage.connector_for == channel:
                return stage
        raise TopologyError(f"no connector stage for channel {channel} in streams.yaml")

    def channel_for(self, intent_id: object) -> str:
        return self.status_channel.format(id=intent_id)


def hash_tag(key: str) -> str | None:
    """The part of `key` a Redis Cluster hashes when it has one: between the first "{" and the next "}",
    if not empty (Redis Cluster specification, "hash tags")."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else None


def _positive_int(stage: str, key: str, value: Any, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TopologyError(f"stage {stage!r}: {key} must be a positive integer, not {value!r}")
    if maximum is not None and value > maximum:
        raise TopologyError(f"stage {stage!r}: {key} must be at most {maximum}, not {value}")
    return value


def _linger_ms(stage: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= LINGER_MS_MAX:
        raise TopologyError(f"stage {stage!r}: linger_ms must be an integer from 0 to {LINGER_MS_MAX}, not {value!r}")
    return value


def parse_topology(document: dict[str, Any]) -> Topology:
    defaults = document.get("defaults", {})
    stages: dict[str, Stage] = {}
    for name, raw in (document.get("stages") or {}).items():
        unknown = set(raw) - STAGE_KEYS
        if unknown:
            raise TopologyError(f"stage {name!r}: unknown keys {sorted(unknown)}")
        merged = {**defaults, **raw}
        for key in ("handler", "stream", "group", "dead_letter_stream"):
            if not isinstance(merged.get(key), str) or not merged[key]:
                raise TopologyError(f"stage {name!r}: {key} is required")
        try:
            states = tuple(State(s) for s in merged.get("input_states", ()))
        except ValueError as exc:
            raise TopologyError(f"stage {name!r}: {exc}") from None
        connector_for = merged.get("connector_for")
        if connector_for is not None and (not isinstance(connector_for, str) or states):
            raise TopologyError(f"stage {name!r}: a connector names its channel (connector_for) and no input_states")
        if not states and connector_for is None:
            raise TopologyError(f"stage {name!r}: input_states is required")
        stages[name] = Stage(
            name=name,
            handler=merged["handler"],
            stream=merged["stream"],
            group=merged["group"],
            dead_letter_stream=merged["dead_letter_stream"],
            input_states=states,
            batch_size=_positive_int(name, "batch_size", merged.get("batch_size"), BATCH_SIZE_MAX),
            block_ms=_positive_int(name, "block_ms", merged.get("block_ms"), BLOCK_MS_MAX),
            linger_ms=_linger_ms(name, merged.get("linger_ms", 0)),
            claim_idle_ms=_positive_int(name, "claim_idle_ms", merged.get("claim_idle_ms")),
            max_deliveries=_positive_int(name, "max_deliveries", merged.get("max_deliveries")),
            stuck_after_s=_positive_int(name, "stuck_after_s", merged.get("stuck_after_s")),
            connector_for=connector_for,
        )
    consumed = [s for stage in stages.values() for s in stage.input_states]
    for state in State:
        if state in WAITING_STATES:
            # Waits for its user (pm/domain/intent.py): the confirmation publishes it, no stage reads it.
            if state in consumed:
                raise TopologyError(f"state {state} waits outside the pipeline: no stage consumes it")
            continue
        if consumed.count(state) != 1:
            raise TopologyError(f"state {state} must be consumed by exactly 1 stage, not {consumed.count(state)}")
    for stage in stages.values():
        # The final states' stage is fed by the outbox worker (consumers/outbox_feed.py) after their status
        # message, never by a stage's publish: it must take no state a stage publishes to.
        final = {state in TERMINAL_STATES for state in stage.input_states}
        if len(final) > 1:
            raise TopologyError(f"stage {stage.name!r}: input_states mixes final and open states")
    streams = [s.stream for s in stages.values()]
    if len(set(streams)) != len(streams):
        raise TopologyError("two stages share a stream")
    poller = document.get("poller") or {}
    return Topology(
        stages=stages,
        poller=PollerConfig(
            interval_ms=_positive_int("poller", "interval_ms", poller.get("interval_ms")),
            batch_size=_positive_int("poller", "batch_size", poller.get("batch_size")),
            trim_interval_ms=_positive_int("poller", "trim_interval_ms", poller.get("trim_interval_ms")),
            lag_interval_ms=_positive_int("poller", "lag_interval_ms", poller.get("lag_interval_ms")),
        ),
        status_channel=str(document.get("status_channel", "intent.{id}")),
        review_stream=str(document.get("review_stream", "pm:{streams}:reviews")),
        data_marker=str(document.get("data_marker", "pm:{streams}:data-marker")),
    )


@cache
def load_topology(path: Path = TOPOLOGY_FILE) -> Topology:
    with open(path, encoding="utf-8") as file:
        return parse_topology(yaml.safe_load(file))


def renamed_document(prefix: str, path: Path = TOPOLOGY_FILE, **stage_overrides: Any) -> dict[str, Any]:
    """streams.yaml with every stream, dead-letter stream and the status channel prefixed, and the same
    overrides applied to every stage: a pipeline of its own on a shared Redis (tests, the benchmark)."""
    document = yaml.safe_load(path.read_text())
    for stage in document["stages"].values():
        stage["stream"] = prefix + stage["stream"]
        stage["dead_letter_stream"] = prefix + stage["dead_letter_stream"]
        stage.update(stage_overrides)
    document["status_channel"] = prefix + document["status_channel"]
    document["review_stream"] = prefix + document["review_stream"]
    document["data_marker"] = prefix + document["data_marker"]
    return document
