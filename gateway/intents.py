"""Views of intents: POST /intents, GET /intents/{id}, GET /intents/{id}/events (Server-Sent Events).

POST /intents, for a request that passed authentication:
    backpressure (503) -> Idempotency-Key (400) -> body (422) -> the key's operation types (403
       OPERATION_NOT_ALLOWED) -> parties and scope (400/403/422)
    -> one SQL statement claims the nonce (401 if used: a replay) and the key (per API key and X-User-Id)
       and inserts the intent (CREATED, version 1), shared with the concurrent requests
       (gateway.batching.IntentWriter)
    -> [Prefer: wait -> subscribe to the intent's status channel] -> XADD to the first stage's stream
    -> store the response for replays -> 202 (or, having waited, 200 once the intent is final)
A REFUND takes its parties from its original and is created alone, in a transaction that also reserves
its amount on the original (gateway/refunds.py): 404/403/422 there, with nothing written but the nonce
(a refusal that depends on the original must not be replayable into a refund once the original changes).
A retry with the same Idempotency-Key (per API key and X-User-Id) and request answers the stored response;
nothing is created twice. A replay of the same signed request (its nonce) is 401, with nothing written.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from redis.exceptions import RedisError

from gateway import refunds
from gateway.auth import acting_user, forbidden, unauthenticated
from gateway.errors import ApiError, bad_request, dumps, json_response, not_found, overloaded, validation_failed
from gateway.metrics import IDEMPOTENT_REPLAYS, INTENT_PUBLISH_FAILURES, INTENTS_CREATED, OVERLOADED
from gateway.models import IntentLimits, IntentRequest, parse_intent_request
from gateway.resources import (
    API_KEY,
    BACKLOG,
    DATABASE,
    INTENT_WRITER,
    NONCE,
    REDIS_BATCH,
    SETTINGS,
    STATUS_HUB,
    STREAM_SLOTS,
    TOPOLOGY,
)
from gateway.status import Subscription
from pm.config.constants import IDEMPOTENCY_KEY_LENGTH_MAX
from pm.domain import signing
from pm.domain.intent import TERMINAL_STATE_NAMES, ErrorCode, Intent, OperationType
from pm.domain.parties import Parties, PartyRefusal, parties_for
from pm.redis import streams
from pm.store import intents as store
from pm.store.keys import MERCHANT_OPERATIONS, SCOPE_ADMIN, ApiKey

log = logging.getLogger("pm.gateway")

IDEMPOTENCY_KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_LENGTH_MAX}}}")
PREFER_WAIT_PATTERN = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])", re.IGNORECASE)


# -- POST /intents ---------------------------------------------------------------------------------


async def create_intent(request: web.Request) -> web.Response:
    app = request.app
    if await app[BACKLOG].overloaded():
        OVERLOADED.inc()
        raise overloaded("the payment pipeline is busy; retry shortly")
    idempotency_key = _idempotency_key(request)
    body = await request.read()
    intent_request = parse_intent_request(body, IntentLimits.from_settings(app[SETTINGS]))
    key = request[API_KEY]
    user_id = acting_user(request, required=False)
    is_refund = intent_request.operation_type == OperationType.REFUND
    if is_refund:  # its parties are the original's (gateway/refunds.py)
        who = await refunds.parties(app[DATABASE], intent_request, key, user_id, request[NONCE])
    else:
        who = parties(intent_request, key, user_id)
    new_intent = store.NewIntent(
        api_key_id=key.key_id,
        idempotency_key=idempotency_key,
        request_hash=_request_hash(request, body),
        operation_type=OperationType(intent_request.operation_type),
        amount_minor=intent_request.amount_minor,
        currency=intent_request.currency,
        sender_id=who.sender_id,
        recipient_id=who.recipient_id,
        operator_id=who.operator_id,
        tags=tuple(intent_request.metadata.tags),
        merchant_id=who.merchant_id,
        destination_ref=intent_request.destination_ref,
        user_id=user_id,
        # Claimed in the statement that creates the intent: a replay is refused however Redis fares.
        nonce=request[NONCE],
        refund_of=intent_request.refund_of,
        max_fee_pre_minor=intent_request.max_fee_pre_minor,
        max_fee_post_minor=intent_request.max_fee_post_minor,
    )
    # A refund reserves its amount on the original in its own transaction; every other intent is batched.
    writer = refunds.create(app[DATABASE], new_intent) if is_refund else app[INTENT_WRITER].create(new_intent)
    outcome = await writer
    if outcome.nonce_used:
        raise unauthenticated("nonce already used")
    if outcome.created is None:
        assert outcome.existing is not None
        return await _answer_existing(request, outcome.existing)
    intent = outcome.created
    INTENTS_CREATED.labels(str(intent.operation_type)).inc()
    wait_s = _prefer_wait_s(request.headers.get("Prefer"), app[SETTINGS].prefer_wait_s_max)
    if wait_s is None:
        return json_response(await _publish(request, intent), 202)
    # Subscribed before the entry exists, so no transition can be published unseen.
    async with app[STATUS_HUB].subscribe(app[TOPOLOGY].channel_for(intent.id)) as subscription:
        await _publish(request, intent)
        await _wait_for_final(app, subscription, intent.id, wait_s)
    current = await store.load_intent(app[DATABASE], intent.id)
    assert current is not None, "an intent is never deleted"
    headers = {"Preference-Applied": f"wait={wait_s}"}
    return json_response(current.to_json(), 200 if current.terminal else 202, headers)


def _idempotency_key(request: web.Request) -> str:
    value = request.headers.get(signing.HEADER_IDEMPOTENCY_KEY)
    if not value:
        raise ApiError(400, ErrorCode.IDEMPOTENCY_KEY_REQUIRED, "Idempotency-Key is required")
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(value):
        raise bad_request(f"Idempotency-Key is 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} visible ASCII characters")
    return value


def authorize_operation(key: ApiKey, operation: OperationType) -> None:
    """The one check of which operation types a key may create, for POST /intents and POST /quote alike
    (both through `parties`), before anything is written: 403 OPERATION_NOT_ALLOWED otherwise."""
    if key.may_create(operation):
        return
    if operation in MERCHANT_OPERATIONS and key.merchant_id is None:
        message = "mini-app operations need a key bound to a merchant (pm keys create --merchant-id)"
        raise ApiError(403, ErrorCode.OPERATION_NOT_ALLOWED, message)
    if key.merchant_id is not None:
        allowed = " and ".join(sorted(MERCHANT_OPERATIONS))
        raise ApiError(403, ErrorCode.OPERATION_NOT_ALLOWED, f"a merchant's key may only create {allowed}")
    raise ApiError(403, ErrorCode.OPERATION_NOT_ALLOWED, f"this key may not create {operation} (pm keys list)")


def parties(intent_request: IntentRequest, key: ApiKey, user_id: int | None) -> Parties:
    """The parties of the intent asked for, or the refusal (also /quote's): first what the caller's key
    may do, then the operation type's shape (pm/domain/parties.py). A merchant only ever comes from the
    caller's key, never from the body."""
    operation = OperationType(intent_request.operation_type)
    authorize_operation(key, operation)
    if intent_request.refund_of is not None:
        raise validation_failed("refund_of is for a REFUND (POST /intents) only", ErrorCode.INVALID_PARTY)
    if operation == OperationType.ADMIN_ADJUSTMENT and not key.allows(SCOPE_ADMIN):
        raise forbidden("ADMIN_ADJUSTMENT needs the admin scope")
    try:
        return parties_for(
            operation,
            acting_user_id=user_id,
            recipient_id=intent_request.recipient_id,
            destination_ref=intent_request.destination_ref,
            merchant_id=key.merchant_id,
        )
    except PartyRefusal as refusal:
        if refusal.code == ErrorCode.BAD_REQUEST:
            raise bad_request(refusal.message) from None
        raise validation_failed(refusal.message, refusal.code) from None


def _request_hash(request: web.Request, body: bytes) -> bytes:
    path = request.raw_path.partition("?")[0]
    return request_hash(request.method, path, request.headers.get(signing.HEADER_USER_ID, ""), body)


def request_hash(method: str, path: str, user_id: str, body: bytes) -> bytes:
    """What makes two requests "the same" for one Idempotency-Key: method, path, user and body."""
    digest = hashlib.sha256()
    for part in (method, path, user_id):
        digest.update(part.encode())
        digest.update(b"\n")
    digest.update(body)
    return digest.digest()


async def _answer_existing(request: web.Request, existing: store.IdempotencyRecord) -> web.Response:
    if existing.request_hash != _request_hash(request, await request.read()):
        raise validation_failed(
            "this Idempotency-Key was used for a different request", ErrorCode.IDEMPOTENCY_KEY_REUSED
        )
    IDEMPOTENT_REPLAYS.inc()
    replayed = {"Idempotent-Replayed": "true"}
    if existing.response_status is not None:  # a record written before sql/0021: its stored answer
        return json_response(existing.response_body, existing.response_status, replayed)
    # The claim commits with its intent, so the intent exists; the first request answered it as created.
    assert existing.intent_id is not None, "a claim is made together with its intent"
    intent = await store.load_intent(request.app[DATABASE], existing.intent_id)
    assert intent is not None, "a claimed intent exists"
    return json_response(intent.as_created().to_json(), 202, replayed)


async def _publish(request: web.Request, intent: Intent) -> dict[str, Any]:
    """Write the first stream entry; returns the answer's body (a replay answers the same, from the row)."""
    app = request.app
    fields = streams.entry_fields(intent)
    try:
        # No MAXLEN: trimming only ever drops entries every group has acknowledged (pm.redis.streams).
        arguments = [item for pair in fields.items() for item in pair]
        await app[REDIS_BATCH].execute("XADD", app[TOPOLOGY].first_stage.stream, "*", *arguments)
    except (RedisError, OSError) as exc:
        # The intent is committed; the status poller re-publishes intents left in CREATED.
        INTENT_PUBLISH_FAILURES.inc()
        log.error("could not publish a new intent", extra={"intent_id": str(intent.id), "error": repr(exc)})
    # Paired with the replay (`_answer_existing`): the first answer is the row as created.
    assert intent.as_created() == intent, "a created intent is as its creating statement wrote it"
    return intent.to_json()


def _prefer_wait_s(header: str | None, wait_s_max: float) -> int | None:
    """`Prefer: wait=N` (RFC 7240) as whole seconds, capped at the setting; None when absent or 0."""
    if not header:
        return None
    match = PREFER_WAIT_PATTERN.search(header)
    if match is None:
        return None
    wait_s = min(int(match.group(1)), int(wait_s_max))
    return wait_s or None


async def _wait_for_final(
    app: web.Application, subscription: Subscription, intent_id: uuid.UUID, wait_s: float
) -> None:
    """Return once a final status arrives or `wait_s` passes (or the app shuts down). A resync (statuses
    may have been lost) asks PostgreSQL whether the intent is final already, and otherwise waits on."""
    deadline_s = time.monotonic() + wait_s
    while (remaining_s := deadline_s - time.monotonic()) > 0:
        if not await subscription.wait(remaining_s):
            return
        statuses, resync = subscription.drain()
        if any(status.get("state") in TERMINAL_STATE_NAMES for status in statuses):
            return
        if resync:
            if app[STATUS_HUB].closing:
                return
            current = await store.load_intent(app[DATABASE], intent_id)
            if current is None or current.terminal:
                return


# -- GET /intents/{id} ----------------------------------------------------------------------------


async def get_intent(request: web.Request) -> web.Response:
    intent = await _readable_intent(request)
    return json_response(intent.to_json())


async def _readable_intent(request: web.Request) -> Intent:
    """The intent named in the path, if the caller may read it (an admin; a party, as X-User-Id; and for a
    merchant's key, only its merchant's intents); 404 for every other case alike."""
    key = request[API_KEY]
    is_admin = key.allows(SCOPE_ADMIN)
    user_id = acting_user(request, required=not is_admin)
    try:
        intent_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise not_found() from None
    intent = await store.load_intent(request.app[DATABASE], intent_id)
    if intent is None or not (is_admin or user_id in intent.parties()):
        raise not_found()
    if key.merchant_id is not None and intent.merchant_id != key.merchant_id:
        # A merchant signs its own X-User-Id: naming a user must not open that user's other intents.
        raise not_found()
    return intent


# -- GET /intents/{id}/events ---------------------------------------------------------------------


async def intent_events(request: web.Request) -> web.StreamResponse:
    """Every transition after `Last-Event-ID` (or `?after_version=`), then live ones, until final.

    Subscribe first, then read PostgreSQL, then stream live statuses, skipping versions already sent:
    nothing is missed between the read and the subscription. A gap in the live versions, or a resync
    from the hub, is filled from PostgreSQL; so is every quiet ping interval, which makes the stream
    right even if pub/sub lost everything.
    """
    intent = await _readable_intent(request)
    after_version = _after_version(request)
    app = request.app
    with app[STREAM_SLOTS].hold((request[API_KEY].key_id, acting_user(request, required=False))):
        return await _stream_events(request, intent, after_version)


async def _stream_events(request: web.Request, intent: Intent, after_version: int) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    deadline_s = time.monotonic() + settings.sse_duration_s_max
    async with app[STATUS_HUB].subscribe(app[TOPOLOGY].channel_for(intent.id)) as subscription:
        async with sse_response(request, ping_interval=settings.sse_ping_interval_s) as response:
            stream = _EventStream(app[DATABASE], response, intent.id, after_version)
            # A final intent whose last event the client has already seen: nothing more will come.
            stream.finished = intent.terminal and after_version >= intent.version
            try:
                await stream.send_from_database()
                while not stream.finished and response.is_connected() and not app[STATUS_HUB].closing:
                    remaining_s = deadline_s - time.monotonic()
                    if remaining_s <= 0:
                        break
                    if not await subscription.wait(min(remaining_s, settings.sse_ping_interval_s)):
                        await stream.send_from_database()
                        continue
                    statuses, resync = subscription.drain()
                    await (stream.send_from_database() if resync else stream.send_live(statuses))
            except ConnectionResetError:
                pass  # the client left
    return response


def _after_version(request: web.Request) -> int:
    text = request.headers.get("Last-Event-ID") or request.query.get("after_version") or "0"
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise bad_request("Last-Event-ID / after_version must be a version number")
    return int(text)


class _EventStream:
    """What one SSE response has sent: the last version, and whether the final state went out."""

    def __init__(
        self, pool: asyncpg.Pool, response: EventSourceResponse, intent_id: uuid.UUID, after_version: int
    ) -> None:
        self.pool = pool
        self.response = response
        self.intent_id = intent_id
        self.last_version = after_version
        self.finished = False

    async def send_from_database(self) -> None:
        events = await store.events_since(self.pool, self.intent_id, self.last_version)
        for event in events:
            await self._send(event.to_json())

    async def send_live(self, statuses: list[dict[str, Any]]) -> None:
        for status in statuses:
            version = status["version"]
            if version <= self.last_version or self.finished:
                continue
            if version > self.last_version + 1:
                await self.send_from_database()  # a status was lost on the way: PostgreSQL has it
                continue
            await self._send(status)  # published as `IntentEvent.to_json()`: live and replayed look the same

    async def _send(self, event: dict[str, Any]) -> None:
        if self.finished or event["version"] <= self.last_version:
            return
        await self.response.send(dumps(event), id=str(event["version"]))
        self.last_version = event["version"]
        self.finished = event["state"] in TERMINAL_STATE_NAMES
