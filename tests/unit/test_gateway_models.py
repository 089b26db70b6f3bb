"""Proves the gateway's pure parts without servers: request bodies parse strictly (no floats or strings
for integers, no unknown fields, bounded tags) and each refusal carries its machine code; `Prefer: wait`
and the history cursor parse as documented; API key scopes (admin grants all); the status subscription
stays bounded and asks for a resync instead of growing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.account import decode_cursor, encode_cursor
from gateway.errors import ApiError
from gateway.intents import _prefer_wait_s
from gateway.models import IntentLimits, IntentRequest, parse_intent_request
from gateway.status import Subscription, _runs
from pm.config.constants import STATUS_SUBSCRIBER_BUFFER_MAX
from pm.store.keys import ApiKey, ApiKeyError, parse_scopes

LIMITS = IntentLimits(amount_minor_min=1, amount_minor_max=1_000_000, tags_count_max=3, tag_length_max=12)
VALID = {"operation_type": "P2P_TRANSFER", "amount_minor": 10_000, "currency": "THB", "recipient_id": 1002,
         "metadata": {"tags": ["kyc_verified"]}}  # fmt: skip


def parse(**change: object) -> IntentRequest:
    return parse_intent_request(json.dumps({**VALID, **change}).encode(), LIMITS)


def refusal(**change: object) -> tuple[int, str]:
    with pytest.raises(ApiError) as refused:
        parse(**change)
    return refused.value.status, str(refused.value.code)


def test_a_valid_body_parses() -> None:
    request = parse()
    assert (request.amount_minor, request.recipient_id, request.metadata.tags) == (10_000, 1002, ["kyc_verified"])
    assert parse(metadata={}).metadata.tags == []
    without_metadata = parse_intent_request(
        b'{"operation_type":"ADMIN_ADJUSTMENT","amount_minor":1,"currency":"USD","recipient_id":5}', LIMITS
    )
    assert without_metadata.metadata.tags == [] and without_metadata.currency == "USD"


@pytest.mark.parametrize("amount", [10_000.0, 1.5, "10000", True, None, [1], {"value": 1}, 2**63], ids=repr)
def test_amount_is_a_strict_integer(amount: object) -> None:
    assert refusal(amount_minor=amount) == (422, "VALIDATION_FAILED")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"amount_minor": 1_000_001}, (422, "AMOUNT_OUT_OF_RANGE")),
        ({"amount_minor": 0}, (422, "VALIDATION_FAILED")),
        ({"currency": "JPY"}, (422, "UNSUPPORTED_CURRENCY")),
        ({"currency": "Thb"}, (422, "VALIDATION_FAILED")),
        ({"operation_type": "NOPE"}, (422, "UNKNOWN_OPERATION")),
        ({"recipient_id": 10.0}, (422, "VALIDATION_FAILED")),
        ({"recipient_id": -1}, (422, "VALIDATION_FAILED")),
        ({"sender_name": "Somchai"}, (422, "VALIDATION_FAILED")),
        ({"metadata": {"email": "a@b.example"}}, (422, "VALIDATION_FAILED")),
        ({"metadata": {"tags": ["a", "b", "c", "d"]}}, (422, "VALIDATION_FAILED")),
        ({"metadata": {"tags": ["x" * 13]}}, (422, "VALIDATION_FAILED")),
        ({"metadata": {"tags": ["has space"]}}, (422, "VALIDATION_FAILED")),
        ({"metadata": {"tags": [""]}}, (422, "VALIDATION_FAILED")),
        ({"metadata": {"tags": ["a", "a"]}}, (422, "VALIDATION_FAILED")),
        ({"metadata": {"tags": [7]}}, (422, "VALIDATION_FAILED")),
    ],
    ids=repr,
)
def test_each_refusal_has_its_code(change: dict[str, object], expected: tuple[int, str]) -> None:
    assert refusal(**change) == expected


@pytest.mark.parametrize(("body", "expected"), [(b"{", (400, "BAD_REQUEST")), (b"", (400, "BAD_REQUEST")),
                                                (b'"text"', (422, "VALIDATION_FAILED")),
                                                (b"[]", (422, "VALIDATION_FAILED"))])  # fmt: skip
def test_not_an_object(body: bytes, expected: tuple[int, str]) -> None:
    with pytest.raises(ApiError) as refused:
        parse_intent_request(body, LIMITS)
    assert (refused.value.status, str(refused.value.code)) == expected


def test_refusals_name_the_field_but_never_echo_the_value() -> None:
    with pytest.raises(ApiError) as refused:
        parse(phone="+66812345678", amount_minor="12")
    assert "phone" in refused.value.message and "amount_minor" in refused.value.message
    assert "+66812345678" not in refused.value.message and "'12'" not in refused.value.message


def test_the_schema_forbids_unknown_fields() -> None:
    schema = IntentRequest.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"operation_type", "amount_minor", "currency"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("wait=5", 5), ("respond-async, wait=3", 3), ("wait=0", None), ("wait=99", 10),
     ("Wait = 2", 2), ("wait=abc", None), ("handling=lenient", None), ("wait=1; respond-async", 1),
     ("await=5", None)],
)  # fmt: skip
def test_prefer_wait(header: str | None, expected: int | None) -> None:
    assert _prefer_wait_s(header, 10.0) == expected


def test_history_cursor_round_trips_and_refuses_garbage() -> None:
    created_at = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    intent_id = uuid.uuid4()
    cursor = encode_cursor(created_at, intent_id)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (created_at, intent_id)
    for garbage in ("", "!!!", "bm90LWEtY3Vyc29y", "x" * 300, encode_cursor(created_at, intent_id)[:-4]):
        with pytest.raises(ApiError) as refused:
            decode_cursor(garbage)
        assert refused.value.status == 400


def test_scopes() -> None:
    assert parse_scopes("intents:write, balance:read,") == {"intents:write", "balance:read"}
    for bad in ("", "intents:write,root", ","):
        with pytest.raises(ApiKeyError):
            parse_scopes(bad)
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    key = ApiKey("pmk_x", "n", frozenset({"balance:read"}), frozenset(), "s", "p", later, None, now, now, None)
    admin = ApiKey("pmk_y", "n", frozenset({"admin"}), frozenset(), "s", None, None, None, now, None, None)
    assert key.allows("balance:read") and not key.allows("intents:write")
    assert all(admin.allows(scope) for scope in ("intents:write", "intents:read", "balance:read", "admin"))
    assert key.active_secrets == ("s", "p") and admin.active_secrets == ("s",)
    revoked = ApiKey("pmk_z", "n", frozenset({"admin"}), frozenset(), "s", "p", later, None, now, None, now)
    assert revoked.active_secrets == ()


async def test_a_subscription_stays_bounded_and_asks_for_a_resync() -> None:
    subscription = Subscription("intent.x")
    assert not await subscription.wait(0.01)
    for version in range(1, STATUS_SUBSCRIBER_BUFFER_MAX + 2):
        subscription.deliver({"state": "CREATED", "version": version})
    assert await subscription.wait(0)
    statuses, resync = subscription.drain()
    assert len(statuses) <= STATUS_SUBSCRIBER_BUFFER_MAX and resync
    assert subscription.drain() == ([], False)


def test_subscribe_commands_are_merged_in_order() -> None:
    commands = [("SUBSCRIBE", b"a"), ("SUBSCRIBE", b"b"), ("UNSUBSCRIBE", b"a"), ("SUBSCRIBE", b"a")]
    assert _runs(commands) == [("SUBSCRIBE", [b"a", b"b"]), ("UNSUBSCRIBE", [b"a"]), ("SUBSCRIBE", [b"a"])]
