"""The intent's transition table refuses every transition it does not list, refusals carry error codes,
intents survive the stream encoding unchanged, and streams.yaml is read strictly (a malformed file is
refused with the stage and field named)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import yaml

from pm.config.topology import TOPOLOGY_FILE, TopologyError, load_topology, parse_topology
from pm.domain.intent import (
    TERMINAL_STATES,
    TRANSITIONS,
    WAITING_STATES,
    ErrorCode,
    Intent,
    OperationType,
    State,
    Transition,
    TransitionError,
    check_transition,
)


def intent(**changes: object) -> Intent:
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "state": State.CREATED,
        "version": 1,
        "operation_type": OperationType.P2P_TRANSFER,
        "amount_minor": 10_000,
        "currency": "THB",
        "sender_id": 1001,
        "recipient_id": 1002,
        "tags": ("kyc_verified",),
        "created_at": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        "updated_at": datetime(2026, 11, 26, 12, 0, 1, tzinfo=UTC),
    }
    fields.update(changes)
    return Intent(**fields)  # type: ignore[arg-type]


def test_terminal_states_never_change() -> None:
    for state in TERMINAL_STATES:
        assert TRANSITIONS[state] == frozenset()
        for target in State:
            with pytest.raises(TransitionError):
                check_transition(state, target)


def test_only_listed_transitions_are_allowed() -> None:
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    for current in State:
        for new in State:
            if (current, new) in allowed:
                check_transition(current, new)
            else:
                with pytest.raises(TransitionError):
                    check_transition(current, new)
    # Only what may hold money can FAIL: AUTHORIZED, and CLEARED (a PSP channel's intent is held at
    # dispatch while its connector submits it); only what holds none is REJECTED.
    assert {a for a, b in allowed if b == State.FAILED} == {State.CLEARED, State.AUTHORIZED}
    assert State.AUTHORIZED not in {a for a, b in allowed if b == State.REJECTED}
    # A charge waiting for its user holds nothing: it comes only from CREATED, and goes on or is refused.
    assert {a for a, b in allowed if b == State.AWAITING_CONFIRMATION} == {State.CREATED}
    assert TRANSITIONS[State.AWAITING_CONFIRMATION] == {State.VALIDATED, State.REJECTED}


def test_refusals_carry_a_code_and_progress_does_not() -> None:
    with pytest.raises(AssertionError):
        Transition(uuid.uuid4(), State.CREATED, State.REJECTED)
    with pytest.raises(AssertionError):
        Transition(uuid.uuid4(), State.CREATED, State.VALIDATED, error_code=ErrorCode.NO_ROUTE)
    Transition(uuid.uuid4(), State.CREATED, State.REJECTED, error_code=ErrorCode.NO_ROUTE, error_message="x")


def test_intent_amounts_are_positive_integers() -> None:
    with pytest.raises(AssertionError):
        intent(amount_minor=0)
    with pytest.raises(AssertionError):
        intent(fee_pre_minor=-1)


def test_stream_encoding_round_trips() -> None:
    original = intent(fee_rules=({"id": 1, "version": 2, "kind": "PRE", "fee_minor": 50},), operator_id=7)
    assert Intent.from_message(original.to_message()) == original
    original = intent(merchant_id=42, destination_ref="tok_abc")
    assert Intent.from_message(original.to_message()) == original
    original = intent(max_fee_pre_minor=0, max_fee_post_minor=25)
    assert Intent.from_message(original.to_message()) == original


def test_api_json_shape() -> None:
    refused = intent(state=State.REJECTED, error_code="NO_ROUTE", error_message="none")
    body = refused.to_json()
    assert set(body) == {
        "id", "state", "version", "operation_type", "amount_minor", "currency", "sender_id", "recipient_id",
        "channel", "fee_pre_minor", "fee_post_minor", "error", "created_at", "updated_at",
        "merchant_id", "destination_ref",  # issue 5: mini-app and payout intents
        "refund_of",  # issue 13 part 4: a refund names its original
        "max_fee_pre_minor", "max_fee_post_minor",  # the fees its caller agreed to (FEE_CHANGED above them)
    }  # fmt: skip
    assert body["error"] == {"code": "NO_ROUTE", "message": "none"}
    assert intent().to_json()["error"] is None


def test_the_shipped_topology_routes_every_state_to_one_stage_and_the_final_ones_to_history() -> None:
    topology = load_topology()
    assert list(topology.stages) == [
        "validation",
        "fees",
        "limits",
        "dispatch",
        "settlement",
        "history",
        "ipps-connector",
        "qp-connector",
    ]
    assert topology.connector_of("QP_TRANSFER").name == "qp-connector"
    assert topology.connector_of("IPPS_TRANSFER").name == "ipps-connector"
    for state in State:
        if state in WAITING_STATES:  # waits for its user; the confirmation publishes it on
            assert all(state not in stage.input_states for stage in topology.stages.values())
            continue
        assert state in topology.stage_for_state(state).input_states
        # The final states' stage is the history stage (fed by the outbox worker, not by a stage).
        assert (topology.stage_for_state(state).name == "history") == (state in TERMINAL_STATES)
    assert topology.final_stage.name == "history"
    assert topology.final_stage.handler == "consumers.history"
    assert topology.first_stage.name == "validation"
    assert topology.channel_for("abc") == "intent.abc"
    assert all(stage.batch_size <= 8189 for stage in topology.stages.values())


def _move_settled_to_fees(document: dict) -> None:
    document["stages"]["history"]["input_states"] = ["REJECTED", "FAILED"]
    document["stages"]["fees"]["input_states"] = ["VALIDATED", "SETTLED"]


def test_linger_is_per_stage_with_a_default_and_zero_turns_it_off() -> None:
    document = _document()
    document["stages"]["fees"]["linger_ms"] = 0
    document["stages"]["settlement"]["linger_ms"] = 250
    topology = parse_topology(document)
    assert topology.stage("fees").linger_ms == 0
    assert topology.stage("settlement").linger_ms == 250
    assert topology.stage("validation").linger_ms == document["defaults"]["linger_ms"] == 10
    document["defaults"].pop("linger_ms")
    assert parse_topology(document).stage("validation").linger_ms == 0


def _document() -> dict:
    return yaml.safe_load(TOPOLOGY_FILE.read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["stages"]["fees"].update(batch_size=0), "stage 'fees': batch_size must be a positive integer"),
        (lambda d: d["stages"]["fees"].update(batch_size=9000), "batch_size must be at most 8189"),
        (lambda d: d["stages"]["fees"].update(block_ms=5001), "block_ms must be at most 5000"),
        (lambda d: d["stages"]["fees"].update(linger_ms=-1), "stage 'fees': linger_ms must be an integer from 0 to"),
        (lambda d: d["stages"]["fees"].update(linger_ms=1001), "linger_ms must be an integer from 0 to 1000"),
        (lambda d: d["stages"]["fees"].update(linger_ms="10"), "linger_ms must be an integer"),
        (lambda d: d["stages"]["fees"].update(colour="red"), "unknown keys"),
        (lambda d: d["stages"]["fees"].pop("stream"), "stage 'fees': stream is required"),
        (lambda d: d["stages"]["fees"].update(input_states=["LOST"]), "'LOST' is not a valid State"),
        (lambda d: d["stages"]["fees"].update(input_states=["CREATED"]), "CREATED must be .* exactly 1 stage, not 2"),
        (lambda d: d["stages"]["fees"].update(input_states=["VALIDATED", "SETTLED"]), "SETTLED must be .*, not 2"),
        (lambda d: d["stages"].pop("history"), "SETTLED must be consumed by exactly 1 stage, not 0"),
        # A charge waiting for its user is published on by the confirmation, never read by a stage.
        (
            lambda d: d["stages"]["fees"].update(input_states=["VALIDATED", "AWAITING_CONFIRMATION"]),
            "AWAITING_CONFIRMATION waits outside the pipeline",
        ),
        (_move_settled_to_fees, "stage 'fees': input_states mixes final and open states"),
        (lambda d: d["stages"]["fees"].update(stream="pm:{streams}:intents:created"), "share a stream"),
    ],
)
def test_malformed_topology_is_refused(edit, message: str) -> None:
    document = _document()
    edit(document)
    with pytest.raises(TopologyError, match=message):
        parse_topology(document)


def test_status_event_ids_are_uuid5_of_intent_and_version() -> None:
    from pm.store.intents import EVENT_ID_NAMESPACE, event_id, event_id_text

    intent_id = uuid.uuid4()
    for version in (1, 6, 1_000):
        expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"{intent_id}:{version}")
        assert event_id_text(str(intent_id), version) == str(expected)
        assert event_id(intent_id, version) == expected
    assert event_id(intent_id, 1) != event_id(intent_id, 2)
