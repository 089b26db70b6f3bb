"""POST /psp/{channel}/callback on real PostgreSQL and Valkey: a signed callback is recorded once per
(channel, event id) and handed to settlement's stream with the PSP's status; a repeat is dropped; an
unsigned or wrongly signed one, or any at a gateway given no secrets, is 401 and causes nothing; bad
bodies, unknown channels and unknown payments get stable codes; a success for an intent already
failed is flagged for review. Nothing here moves money."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from pm.domain import psp_signing
from pm.domain.intent import ErrorCode, OperationType, State, Transition
from pm.psp.secrets import SIMULATOR_IPPS_CALLBACK_SECRET, SIMULATOR_SETTINGS
from pm.store import intents as store
from tests.support.gateway import Gateway, error_of, new_user

SECRET = SIMULATOR_IPPS_CALLBACK_SECRET
PATH = "/psp/IPPS_TRANSFER/callback"


@pytest.fixture(scope="module")
async def gateway(make_gateway) -> AsyncIterator[Gateway]:
    """A gateway that knows the simulator's callback secrets (given explicitly: they have no default)."""
    async with make_gateway(**SIMULATOR_SETTINGS) as started:
        yield started


async def authorized_payout(gateway: Gateway, *, fail: bool = False, settle: bool = False) -> uuid.UUID:
    (outcome,) = await store.create_intents(
        gateway.pool,
        [
            store.NewIntent(
                api_key_id="psp-callback-test", idempotency_key=uuid.uuid4().hex, request_hash=b"h",
                operation_type=OperationType.IPPS_WITHDRAWAL, amount_minor=12_300, currency="THB",
                sender_id=new_user(), recipient_id=None, operator_id=None, destination_ref="tok_1",
            )
        ],
    )  # fmt: skip
    assert outcome.created is not None
    intent_id = outcome.created.id
    path = [State.CREATED, State.VALIDATED, State.PRICED, State.CLEARED, State.AUTHORIZED]
    for expected, new in itertools.pairwise(path):
        channel = "IPPS_TRANSFER" if new == State.VALIDATED else None
        (result,) = await store.apply_transitions(gateway.pool, [Transition(intent_id, expected, new, channel=channel)])
        assert result.applied
    if fail:
        transition = Transition(
            intent_id, State.AUTHORIZED, State.FAILED, error_code=ErrorCode.EXPIRED, error_message="x"
        )
        (result,) = await store.apply_transitions(gateway.pool, [transition])
        assert result.applied
    if settle:
        settled = Transition(intent_id, State.AUTHORIZED, State.SETTLED)
        (result,) = await store.apply_transitions(gateway.pool, [settled])
        assert result.applied
    return intent_id


PAYMENT = {"amount_minor": 12_300, "currency": "THB"}  # what PM asked the PSP to pay out (no POST fee)


def event_body(
    intent_id: uuid.UUID, status: str = "SUCCEEDED", event_id: str | None = None, payment: dict | None = None
) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id or uuid.uuid4().hex, "provider": "ipps", "reference": str(intent_id),
            "status": status, **(PAYMENT if payment is None else payment), "occurred_at": "2026-11-26T10:00:00Z",
        }
    )  # fmt: skip


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {
        psp_signing.SIGNATURE_HEADER: psp_signing.sign(secret, body, int(time.time())),
        "Content-Type": "application/json",
    }


async def handed_over(gateway: Gateway, intent_id: uuid.UUID) -> list[str | None]:
    """The psp_status of every entry on settlement's stream for this intent."""
    stream = gateway.topology.stage_for_state(State.AUTHORIZED).stream
    entries = await gateway.redis.xrange(stream)
    messages = [orjson.loads(fields[b"intent"]) for _, fields in entries]
    return [m.get("psp_status") for m in messages if m["id"] == str(intent_id)]


async def recorded_events(gateway: Gateway, intent_id: uuid.UUID) -> list[str]:
    rows = await gateway.pool.fetch(
        "SELECT status FROM pm.psp_event WHERE intent_id = $1 ORDER BY received_at", intent_id
    )
    return [row["status"] for row in rows]


async def test_a_signed_callback_is_recorded_once_and_handed_to_settlement(gateway: Gateway) -> None:
    intent_id = await authorized_payout(gateway)
    body = event_body(intent_id, event_id="evt-" + uuid.uuid4().hex)
    first = await gateway.raw("POST", PATH, body=body, headers=signed(body))
    assert first.status == 200 and (await first.json()) == {"received": True, "duplicate": False}
    repeat = await gateway.raw("POST", PATH, body=body, headers=signed(body))
    assert repeat.status == 200 and (await repeat.json())["duplicate"] is True
    assert await recorded_events(gateway, intent_id) == ["SUCCEEDED"]
    assert await handed_over(gateway, intent_id) == ["SUCCEEDED"]
    # A later, stale event (new id) is recorded and handed over too: settlement ignores PROCESSING.
    stale = event_body(intent_id, status="PROCESSING")
    assert (await gateway.raw("POST", PATH, body=stale, headers=signed(stale))).status == 200
    assert await handed_over(gateway, intent_id) == ["SUCCEEDED", "PROCESSING"]
    state = await gateway.pool.fetchval("SELECT state FROM pm.intent WHERE id = $1", intent_id)
    assert state == "AUTHORIZED"  # the gateway never transitions: settlement does


@pytest.mark.parametrize("headers", [{}, {"X-PSP-Signature": "t=1,v1=00"}, "wrong-secret"])
async def test_an_unsigned_callback_causes_nothing(gateway: Gateway, headers) -> None:
    """Not even a status query: a stream of forged callbacks naming AUTHORIZED intents made settlement
    ask (or submit to) the PSP once per callback (issue 10, item 9)."""
    intent_id = await authorized_payout(gateway)
    body = event_body(intent_id, status="DECLINED")
    if headers == "wrong-secret":
        headers = signed(body, secret="not-the-psp-secret-at-all")
    for _ in range(5):
        response = await gateway.raw("POST", PATH, body=body, headers=headers)
        assert await error_of(response) == (401, "UNAUTHENTICATED")
    assert await recorded_events(gateway, intent_id) == []
    assert await handed_over(gateway, intent_id) == []
    state = await gateway.pool.fetchval("SELECT state FROM pm.intent WHERE id = $1", intent_id)
    assert state == "AUTHORIZED"


async def test_a_gateway_without_psp_secrets_refuses_every_callback(make_gateway) -> None:
    """No secret has a default any more (issue 10, item 2): a callback signed with the simulator's public
    secret, which used to be the default, is 401 at a gateway that was given none, and hands nothing over."""
    async with make_gateway(psp_ipps_callback_secret=None, psp_qp_callback_secret=None) as bare:
        intent_id = await authorized_payout(bare)
        body = event_body(intent_id, status="SUCCEEDED")
        assert await error_of(await bare.raw("POST", PATH, body=body, headers=signed(body))) == (401, "UNAUTHENTICATED")
        assert await recorded_events(bare, intent_id) == []
        assert await handed_over(bare, intent_id) == []


async def test_a_tampered_body_is_not_trusted(gateway: Gateway) -> None:
    intent_id = await authorized_payout(gateway)
    body = event_body(intent_id, status="SUCCEEDED")
    headers = signed(body)
    tampered = body.replace(b"SUCCEEDED", b"DECLINED_")
    assert await error_of(await gateway.raw("POST", PATH, body=tampered, headers=headers)) == (401, "UNAUTHENTICATED")
    assert await recorded_events(gateway, intent_id) == []


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (PATH, b"not json", (400, "BAD_REQUEST")),
        (PATH, b"[1, 2]", (400, "BAD_REQUEST")),
        (PATH, orjson.dumps({"event_id": "e1", "status": "SUCCEEDED", "reference": "nope"}), (400, "BAD_REQUEST")),
        (PATH, orjson.dumps({"event_id": "e 1", "status": "SUCCEEDED", "reference": str(uuid.uuid4())}),
         (400, "BAD_REQUEST")),
        (PATH, orjson.dumps({"event_id": "e1", "status": "done!", "reference": str(uuid.uuid4())}),
         (400, "BAD_REQUEST")),
        (PATH, orjson.dumps({"event_id": "e1", "status": "SUCCEEDED", "reference": str(uuid.uuid4())}),
         (404, "NOT_FOUND")),
        ("/psp/NOPE/callback", b"{}", (404, "NOT_FOUND")),
        ("/psp/INTERNAL_P2P/callback", b"{}", (404, "NOT_FOUND")),
    ],
    # Fixed ids: the bodies hold fresh uuids, and every pytest-xdist worker must collect the same names.
    ids=["not-json", "not-an-object", "bad-reference", "bad-event-id", "bad-status", "unknown-intent",
         "unknown-channel", "internal-channel"],
)  # fmt: skip
async def test_bad_callbacks_get_stable_codes_and_write_nothing(gateway: Gateway, path, body, expected) -> None:
    before = await gateway.pool.fetchval("SELECT count(*) FROM pm.psp_event")
    assert await error_of(await gateway.raw("POST", path, body=body, headers=signed(body))) == expected
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.psp_event") == before


async def test_a_success_for_a_failed_intent_is_flagged_for_review_not_settled(gateway: Gateway) -> None:
    intent_id = await authorized_payout(gateway, fail=True)
    body = event_body(intent_id, status="SUCCEEDED")
    assert (await gateway.raw("POST", PATH, body=body, headers=signed(body))).status == 200
    row = await gateway.pool.fetchrow(
        "SELECT state, needs_review, review_reason FROM pm.intent WHERE id = $1", intent_id
    )
    assert (row["state"], row["needs_review"]) == ("FAILED", True)
    assert "SUCCEEDED after the intent failed" in row["review_reason"]
    assert await handed_over(gateway, intent_id) == []


async def review_of(gateway: Gateway, intent_id: uuid.UUID) -> tuple[str, bool, str | None]:
    row = await gateway.pool.fetchrow(
        "SELECT state, needs_review, review_reason FROM pm.intent WHERE id = $1", intent_id
    )
    return row["state"], row["needs_review"], row["review_reason"]


@pytest.mark.parametrize(
    "payment",
    [
        {"amount_minor": 1, "currency": "THB"},
        {"amount_minor": 12_301, "currency": "THB"},
        {"amount_minor": 12_300, "currency": "USD"},
        {"amount_minor": "12300", "currency": "THB"},
        {"amount_minor": 12_300.0, "currency": "THB"},
        {"currency": "THB"},
        {},
    ],
    ids=["one-satang", "one-more", "usd", "string", "float", "no-amount", "neither"],
)
async def test_a_callback_for_another_payment_is_flagged_and_decides_nothing(gateway: Gateway, payment) -> None:
    """A signed success that names another amount or currency than PM submitted (a PSP's bug, a crossed
    reference) settles nothing: it is recorded, flagged for an operator, and handed to no stage."""
    intent_id = await authorized_payout(gateway)
    body = event_body(intent_id, status="SUCCEEDED", payment=payment)
    answer = await gateway.raw("POST", PATH, body=body, headers=signed(body))
    assert answer.status == 200 and (await answer.json()) == {"received": True, "duplicate": False}
    state, needs_review, reason = await review_of(gateway, intent_id)
    assert (state, needs_review) == ("AUTHORIZED", True)
    assert "another payment" in reason and "12300 THB" in reason, reason
    assert await handed_over(gateway, intent_id) == []
    assert await recorded_events(gateway, intent_id) == ["SUCCEEDED"]


@pytest.mark.parametrize("status", ["DECLINED", "SUCCEEDED", "PROCESSING"])
async def test_a_psp_contradicting_a_settled_payout_is_flagged(gateway: Gateway, status: str) -> None:
    """A decline after PM settled (PM paid the payee's side; the PSP says the money never left) needs an
    operator; a repeated success or a stale PROCESSING does not."""
    intent_id = await authorized_payout(gateway, settle=True)
    body = event_body(intent_id, status=status)
    assert (await gateway.raw("POST", PATH, body=body, headers=signed(body))).status == 200
    state, needs_review, reason = await review_of(gateway, intent_id)
    assert (state, needs_review) == ("SETTLED", status == "DECLINED")
    if status == "DECLINED":
        assert reason == "IPPS_TRANSFER reported DECLINED after the intent settled"
    assert await handed_over(gateway, intent_id) == []
