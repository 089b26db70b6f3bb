"""POST /intents on real PostgreSQL and Valkey: a signed request creates exactly one intent (CREATED,
version 1, one event) and one stream entry; idempotent replays answer what the first request got (the
intent as created); bad input, missing parties and unsupported operations are refused at the edge with
nothing written; only a party (or admin) can read an intent."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from gateway.intents import request_hash
from pm.domain.intent import Intent, OperationType, State, advance
from pm.redis import streams
from pm.store import intents as store
from tests.support.gateway import ADMIN, Gateway, MakeGateway, error_of, new_user, p2p_body


async def test_signed_post_creates_one_intent_event_and_stream_entry(gateway: Gateway) -> None:
    key = await gateway.key()
    sender, recipient = new_user(), new_user()
    before = await gateway.stream_length()
    body = json.dumps(
        {
            "operation_type": "P2P_TRANSFER",
            "amount_minor": 10_000,
            "currency": "THB",
            "recipient_id": recipient,
            "metadata": {"tags": ["kyc_verified"]},
        }
    ).encode()
    response = await gateway.post_intent(key, body, user_id=sender)
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["state"] == "CREATED" and answer["version"] == 1
    assert (answer["sender_id"], answer["recipient_id"], answer["amount_minor"]) == (sender, recipient, 10_000)

    intent = await store.load_intent(gateway.pool, uuid.UUID(answer["id"]))
    assert intent is not None and intent.to_json() == answer
    assert intent.tags == ("kyc_verified",)
    events = await store.events_since(gateway.pool, intent.id, 0)
    assert [(event.version, event.state) for event in events] == [(1, "CREATED")]

    assert await gateway.stream_length() == before + 1
    [(_, fields)] = await gateway.redis.xrevrange(gateway.topology.first_stage.stream, count=1)
    assert list(fields) == [b"intent"]
    assert streams.decode_entry(fields) == intent
    assert await gateway.writes_by(key) == (1, 1)


async def test_replay_returns_the_stored_response_and_creates_nothing_more(gateway: Gateway) -> None:
    key = await gateway.key()
    sender, recipient = new_user(), new_user()
    before = await gateway.stream_length()
    first = await gateway.post_intent(key, p2p_body(recipient), user_id=sender, idempotency_key="order-1")
    again = await gateway.post_intent(key, p2p_body(recipient), user_id=sender, idempotency_key="order-1")
    assert (first.status, again.status) == (202, 202)
    assert await again.json() == await first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await gateway.writes_by(key) == (1, 1)
    assert await gateway.stream_length() == before + 1


async def test_same_key_for_another_request_is_422(gateway: Gateway) -> None:
    key = await gateway.key()
    sender, recipient = new_user(), new_user()
    first = await gateway.post_intent(key, p2p_body(recipient), user_id=sender, idempotency_key="k")
    assert first.status == 202
    other_amount = await gateway.post_intent(key, p2p_body(recipient, 20_000), user_id=sender, idempotency_key="k")
    assert await error_of(other_amount) == (422, "IDEMPOTENCY_KEY_REUSED")
    # Keys are per caller and user: another user of the same API key, and another API key, may use the
    # same Idempotency-Key for a request of their own.
    other_user = await gateway.post_intent(key, p2p_body(recipient), user_id=new_user(), idempotency_key="k")
    assert other_user.status == 202
    other_caller = await gateway.post_intent(
        await gateway.key(), p2p_body(recipient), user_id=sender, idempotency_key="k"
    )
    assert other_caller.status == 202
    assert await gateway.writes_by(key) == (2, 2)


async def _claim_unanswered(gateway: Gateway, key_id: str, idempotency_key: str, sender: int, body: bytes) -> Intent:
    """What a first request leaves when its gateway dies between the commit and the answer."""
    outcome = await store.create_intent(
        gateway.pool,
        api_key_id=key_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash("POST", "/intents", str(sender), body),
        operation_type=OperationType.P2P_TRANSFER,
        amount_minor=10_000,
        currency="THB",
        sender_id=sender,
        recipient_id=json.loads(body)["recipient_id"],
        operator_id=None,
        tags=[],
        user_id=sender,
    )
    assert outcome.created is not None
    return outcome.created


async def _advance(gateway: Gateway, intent: Intent, *transitions: tuple[State, dict[str, Any]]) -> Intent:
    for state, changes in transitions:
        [result] = await store.apply_transitions(gateway.pool, [advance(intent, state, **changes)])
        assert result.applied
        intent = result.intent
    return intent


async def test_a_replay_answers_the_first_answer_whatever_the_intent_became(gateway: Gateway) -> None:
    """The answer to a replay is the intent as created (what the first request got), from its row: at
    once after the commit (the first request's gateway may have died before answering), and the same once
    the intent has moved on (a channel, fees, another state). Nothing is written for a replay."""
    key = await gateway.key()
    sender, body = new_user(), p2p_body(new_user())
    created = await _claim_unanswered(gateway, key.key_id, "lost-answer-1", sender, body)

    at_once = await gateway.post_intent(key, body, user_id=sender, idempotency_key="lost-answer-1")
    assert (at_once.status, at_once.headers["Idempotent-Replayed"]) == (202, "true")
    assert await at_once.json() == created.to_json()

    moved_on = await _advance(
        gateway, created, (State.VALIDATED, {"channel": "INTERNAL"}),
        (State.PRICED, {"fee_pre_minor": 25, "fee_post_minor": 5}), (State.CLEARED, {}),
    )  # fmt: skip
    assert moved_on.to_json() != created.to_json()
    later = await gateway.post_intent(key, body, user_id=sender, idempotency_key="lost-answer-1")
    assert later.status == 202
    assert await later.read() == await at_once.read()  # byte for byte
    assert await gateway.writes_by(key) == (1, 1)
    stored = await gateway.pool.fetchrow(
        "SELECT response_status, response_body FROM pm.idempotency WHERE api_key_id = $1", key.key_id
    )
    assert tuple(stored) == (None, None)


async def test_a_record_with_a_stored_answer_replays_that_answer(gateway: Gateway) -> None:
    """Records written before sql/0021 (or by a gateway of that time, in a rolling deploy) carry their
    answer: a replay gives it as it was stored."""
    key = await gateway.key()
    sender, body = new_user(), p2p_body(new_user())
    created = await _claim_unanswered(gateway, key.key_id, "stored-1", sender, body)
    stored_body = {**created.to_json(), "stored": True}
    await gateway.pool.execute(
        "UPDATE pm.idempotency SET response_status = 202, response_body = $2::jsonb WHERE api_key_id = $1",
        key.key_id, json.dumps(stored_body),
    )  # fmt: skip
    replay = await gateway.post_intent(key, body, user_id=sender, idempotency_key="stored-1")
    assert (replay.status, await replay.json()) == (202, stored_body)


async def test_idempotency_key_is_required_and_bounded(gateway: Gateway) -> None:
    key = await gateway.key()
    sender, body = new_user(), p2p_body(new_user())
    missing = await gateway.send("POST", "/intents", key=key, body=body, user_id=sender)
    assert await error_of(missing) == (400, "IDEMPOTENCY_KEY_REQUIRED")
    too_long = await gateway.post_intent(key, body, user_id=sender, idempotency_key="k" * 129)
    assert await error_of(too_long) == (400, "BAD_REQUEST")
    assert await gateway.writes_by(key) == (0, 0)


INVALID_BODIES = [
    ({"amount_minor": 100.0}, 422, "VALIDATION_FAILED"),
    ({"amount_minor": 100.5}, 422, "VALIDATION_FAILED"),
    ({"amount_minor": "100"}, 422, "VALIDATION_FAILED"),
    ({"amount_minor": True}, 422, "VALIDATION_FAILED"),
    ({"amount_minor": 0}, 422, "VALIDATION_FAILED"),
    ({"amount_minor": -5}, 422, "VALIDATION_FAILED"),
    ({"amount_minor": 10**12}, 422, "AMOUNT_OUT_OF_RANGE"),
    ({"recipient_id": "1002"}, 422, "VALIDATION_FAILED"),
    ({"recipient_id": 0}, 422, "VALIDATION_FAILED"),
    ({"currency": "XXX"}, 422, "UNSUPPORTED_CURRENCY"),
    ({"currency": "thb"}, 422, "VALIDATION_FAILED"),
    ({"operation_type": "STEAL"}, 422, "UNKNOWN_OPERATION"),
    ({"operation_type": "QP_TOPUP"}, 422, "INVALID_PARTY"),  # a top-up credits the acting user: no recipient_id
    ({"operation_type": "IPPS_WITHDRAWAL"}, 422, "INVALID_PARTY"),  # a payout has no recipient in the wallet
    ({"operation_type": "IPPS_WITHDRAWAL", "recipient_id": None}, 422, "INVALID_PARTY"),  # nor no destination
    ({"operation_type": "IPPS_WITHDRAWAL", "recipient_id": None, "destination_ref": "a b"}, 422, "VALIDATION_FAILED"),
    # An account or phone number in clear, not the Auth Center's token.
    (
        {"operation_type": "IPPS_WITHDRAWAL", "recipient_id": None, "destination_ref": "123-4-56789-0"},
        422,
        "VALIDATION_FAILED",
    ),
    ({"destination_ref": "tok_1"}, 422, "INVALID_PARTY"),  # only payouts take a destination
    ({"recipient_name": "Somchai Jaidee"}, 422, "VALIDATION_FAILED"),
    ({"phone": "+66812345678"}, 422, "VALIDATION_FAILED"),
    ({"metadata": {"tags": ["kyc_verified"], "citizen_id": "1101700203451"}}, 422, "VALIDATION_FAILED"),
    ({"metadata": {"tags": ["Somchai Jaidee"]}}, 422, "VALIDATION_FAILED"),
    ({"metadata": {"tags": "kyc_verified"}}, 422, "VALIDATION_FAILED"),
]


@pytest.mark.parametrize(("change", "status", "code"), INVALID_BODIES)
async def test_invalid_bodies_are_refused_and_write_nothing(
    gateway: Gateway, change: dict[str, Any], status: int, code: str
) -> None:
    key = await gateway.key()
    before = await gateway.stream_length()
    body = {"operation_type": "P2P_TRANSFER", "amount_minor": 10_000, "currency": "THB", "recipient_id": new_user()}
    response = await gateway.post_intent(key, json.dumps({**body, **change}).encode(), user_id=new_user())
    assert await error_of(response) == (status, code)
    error = (await response.json())["error"]
    for value in change.values():
        if isinstance(value, str) and len(value) > 4:
            assert value not in error["message"]  # refused input is never echoed (it may be PII)
    assert await gateway.writes_by(key) == (0, 0)
    assert await gateway.stream_length() == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [(b"{not json", 400, "BAD_REQUEST"), (b"[1]", 422, "VALIDATION_FAILED"), (b"", 400, "BAD_REQUEST")],
)
async def test_malformed_json_is_refused(gateway: Gateway, body: bytes, status: int, code: str) -> None:
    key = await gateway.key()
    response = await gateway.post_intent(key, body, user_id=new_user())
    assert await error_of(response) == (status, code)
    assert await gateway.writes_by(key) == (0, 0)


async def test_p2p_needs_a_sender_and_a_different_recipient(gateway: Gateway) -> None:
    key = await gateway.key()
    sender = new_user()
    no_sender = await gateway.post_intent(key, p2p_body(new_user()), user_id=None)
    assert await error_of(no_sender) == (400, "BAD_REQUEST")
    bad_sender = await gateway.post_intent(key, p2p_body(new_user()), user_id="01")
    assert await error_of(bad_sender) == (400, "BAD_REQUEST")
    no_recipient = await gateway.post_intent(
        key, b'{"operation_type":"P2P_TRANSFER","amount_minor":5,"currency":"THB"}', user_id=sender
    )
    assert await error_of(no_recipient) == (422, "INVALID_PARTY")
    to_self = await gateway.post_intent(key, p2p_body(sender), user_id=sender)
    assert await error_of(to_self) == (422, "SAME_PARTY")
    assert await gateway.writes_by(key) == (0, 0)


async def test_admin_adjustment_needs_admin_and_credits_the_recipient(gateway: Gateway) -> None:
    operator, recipient = new_user(), new_user()
    body = json.dumps(
        {"operation_type": "ADMIN_ADJUSTMENT", "amount_minor": 50_000, "currency": "THB", "recipient_id": recipient}
    ).encode()
    plain = await gateway.key()
    refused = await gateway.post_intent(plain, body, user_id=operator)
    assert await error_of(refused) == (403, "OPERATION_NOT_ALLOWED")
    assert await gateway.writes_by(plain) == (0, 0)

    admin = await gateway.key(*ADMIN)
    accepted = await gateway.post_intent(admin, body, user_id=operator)
    assert accepted.status == 202
    intent = await store.load_intent(gateway.pool, uuid.UUID((await accepted.json())["id"]))
    assert intent is not None
    assert (intent.sender_id, intent.recipient_id, intent.operator_id) == (None, recipient, operator)
    without_operator = await gateway.post_intent(admin, body, user_id=None)
    assert without_operator.status == 202


async def test_bounds_come_from_the_settings(make_gateway: MakeGateway) -> None:
    async with make_gateway(
        intent_amount_minor_min=100, intent_amount_minor_max=500, intent_tags_count_max=2, intent_tag_length_max=5
    ) as small:
        key = await small.key()

        async def post(amount_minor: int, tags: list[str]) -> tuple[int, str | None]:
            body = p2p_body(new_user(), amount_minor, metadata={"tags": tags})
            response = await small.post_intent(key, body, user_id=new_user())
            return response.status, ((await response.json()).get("error") or {}).get("code")

        assert await post(100, ["a", "bb"]) == (202, None)
        assert await post(500, ["abcde"]) == (202, None)
        assert await post(99, []) == (422, "AMOUNT_OUT_OF_RANGE")
        assert await post(501, []) == (422, "AMOUNT_OUT_OF_RANGE")
        assert await post(200, ["a", "b", "c"]) == (422, "VALIDATION_FAILED")
        assert await post(200, ["abcdef"]) == (422, "VALIDATION_FAILED")
        assert await small.writes_by(key) == (2, 2)


async def test_body_larger_than_the_setting_is_413(make_gateway: MakeGateway) -> None:
    async with make_gateway(http_body_bytes_max=1024) as small:
        key = await small.key()
        padded = p2p_body(new_user(), metadata={"tags": ["t" * 10] * 200})
        assert len(padded) > 1024
        response = await small.post_intent(key, padded, user_id=new_user())
        assert await error_of(response) == (413, "PAYLOAD_TOO_LARGE")
        assert await small.writes_by(key) == (0, 0)
        assert await small.stream_length() == 0


async def test_an_intent_is_created_even_when_its_stream_entry_cannot_be_written(make_gateway: MakeGateway) -> None:
    async with make_gateway() as broken:
        # A string where the stream should be: every XADD fails with WRONGTYPE.
        await broken.redis.set(broken.topology.first_stage.stream, b"not a stream")
        key = await broken.key()
        sender, body = new_user(), p2p_body(new_user())
        response = await broken.post_intent(key, body, user_id=sender, idempotency_key="no-stream-1")
        assert response.status == 202
        intent = await store.load_intent(broken.pool, uuid.UUID((await response.json())["id"]))
        assert intent is not None and intent.state == "CREATED"  # the status poller will publish it
        # A replay answers as the first request was answered, without the entry either.
        replay = await broken.post_intent(key, body, user_id=sender, idempotency_key="no-stream-1")
        assert (replay.status, await replay.json()) == (202, await response.json())


async def test_only_a_party_or_admin_reads_an_intent(gateway: Gateway) -> None:
    key = await gateway.key()
    sender, recipient, stranger = new_user(), new_user(), new_user()
    created = await (await gateway.post_intent(key, p2p_body(recipient), user_id=sender)).json()
    path = f"/intents/{created['id']}"
    for user in (sender, recipient):
        response = await gateway.send("GET", path, key=key, user_id=user)
        assert response.status == 200 and await response.json() == created
    assert await error_of(await gateway.send("GET", path, key=key, user_id=stranger)) == (404, "NOT_FOUND")
    assert await error_of(await gateway.send("GET", path, key=key)) == (400, "BAD_REQUEST")
    for missing in (f"/intents/{uuid.uuid4()}", "/intents/not-a-uuid", "/intents/1"):
        assert await error_of(await gateway.send("GET", missing, key=key, user_id=sender)) == (404, "NOT_FOUND")
    admin = await gateway.key(*ADMIN)
    as_admin = await gateway.send("GET", path, key=admin)
    assert as_admin.status == 200 and (await as_admin.json())["id"] == created["id"]
