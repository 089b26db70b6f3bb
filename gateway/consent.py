"""A user's consent to mini-app charges (scope `consent:write`: the app's key, through the nginx edge).

    POST   /intents/{id}/confirm             -> 200 the intent (VALIDATED, on to the fees stage)
    PUT    /api/pm/allowances/{merchant_id}  {"daily_max_minor": N, "currency": "THB"} -> 200 the allowance
           /api/pm/allowances/{merchant_id}?daily_max_minor=N&currency=THB, empty body: the same (the
           nginx edge's form: it forwards no body, since the Auth Center cannot sign one it never sees)
    DELETE /api/pm/allowances/{merchant_id}  -> 200 {"revoked": n}
    GET    /api/pm/allowances                -> 200 {"items": [...]}: cap and what today used of it

The user is the signed X-User-Id (required). A confirmation names a MINIAPP_CHARGE whose payer is that
user; any other intent, or another user's, is 404 NOT_FOUND alike. Confirming moves the charge
AWAITING_CONFIRMATION -> VALIDATED (compare-and-set) and puts it on the fees stage's stream; confirming it
again answers the intent as it is now (idempotent); one past PM_MINIAPP_CONFIRMATION_TIMEOUT_S, or that
ended REJECTED CONFIRMATION_EXPIRED, is 409 CONFIRMATION_EXPIRED; any other final one 409 CONFLICT.
A publish that fails after the commit is harmless: the status poller re-drives a VALIDATED intent.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from gateway.auth import acting_user
from gateway.errors import ApiError, bad_request, json_response, not_found, validation_failed
from gateway.resources import DATABASE, REDIS_BATCH, SETTINGS, TOPOLOGY
from ledger.accounts import CURRENCY_LEDGER
from pm.domain.intent import ErrorCode, Intent, OperationType, State, Transition
from pm.domain.limits import WALLET_TIME_ZONE
from pm.redis import streams
from pm.store import allowances
from pm.store import intents as store

log = logging.getLogger("pm.gateway")

MERCHANT_ID_PATTERN = re.compile(r"[1-9][0-9]{0,17}")
ALLOWANCE_MINOR_MAX = 10**15  # no wallet's day needs more; a bigint holds it with room for the sums


def _expired() -> ApiError:
    return ApiError(409, ErrorCode.CONFIRMATION_EXPIRED, "the charge was not confirmed in time")


async def confirm(request: web.Request) -> web.Response:
    user_id = acting_user(request, required=True)
    intent = await _own_charge(request, user_id)
    if intent.state == State.AWAITING_CONFIRMATION:
        timeout_s = request.app[SETTINGS].miniapp_confirmation_timeout_s
        assert intent.updated_at is not None
        if (datetime.now(UTC) - intent.updated_at).total_seconds() >= timeout_s:
            raise _expired()  # the status poller ends it REJECTED CONFIRMATION_EXPIRED
        transition = Transition(intent.id, State.AWAITING_CONFIRMATION, State.VALIDATED)
        (result,) = await store.apply_transitions(request.app[DATABASE], [transition])
        intent = result.intent
        if result.applied:
            await _publish_validated(request, intent)
    if intent.error_code == ErrorCode.CONFIRMATION_EXPIRED:
        raise _expired()
    if intent.state in (State.REJECTED, State.FAILED):
        raise ApiError(409, ErrorCode.CONFLICT, f"the charge ended {intent.state}")
    return json_response(intent.to_json())


async def _own_charge(request: web.Request, user_id: int | None) -> Intent:
    """The charge named in the path if this user pays it; 404 alike for every other case."""
    try:
        intent_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise not_found() from None
    intent = await store.load_intent(request.app[DATABASE], intent_id)
    if intent is None or intent.operation_type != OperationType.MINIAPP_CHARGE or intent.sender_id != user_id:
        raise not_found()
    return intent


async def _publish_validated(request: web.Request, intent: Intent) -> None:
    app = request.app
    fields = streams.entry_fields(intent)
    try:
        stream = app[TOPOLOGY].stage_for_state(State.VALIDATED).stream
        await app[REDIS_BATCH].execute("XADD", stream, "*", *[item for pair in fields.items() for item in pair])
    except (RedisError, OSError) as exc:
        # Committed: the status poller re-publishes an intent left in VALIDATED after stuck_after_s.
        log.error("could not publish a confirmed charge", extra={"intent_id": str(intent.id), "error": repr(exc)})


# -- allowances ------------------------------------------------------------------------------------


def _merchant_id(request: web.Request) -> int:
    text = request.match_info["merchant_id"]
    if not MERCHANT_ID_PATTERN.fullmatch(text):
        raise bad_request("merchant_id must be a positive integer")
    return int(text)


async def put_allowance(request: web.Request) -> web.Response:
    user_id = acting_user(request, required=True)
    assert user_id is not None
    merchant_id = _merchant_id(request)
    body = await request.read()
    if body:
        daily_max_minor, currency = _allowance_body(body)
    else:
        daily_max_minor, currency = _allowance_query(request)
    row = await allowances.grant(request.app[DATABASE], user_id, merchant_id, currency, daily_max_minor)
    return json_response(_allowance_json(row, used_today_minor=None))


def _allowance_body(body: bytes) -> tuple[int, str]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("the body must be JSON") from None
    if not isinstance(data, dict) or set(data) - {"daily_max_minor", "currency"}:
        raise validation_failed('the body is {"daily_max_minor": N, "currency": "THB"} and nothing else')
    amount = data.get("daily_max_minor")
    if type(amount) is not int or not 0 < amount <= ALLOWANCE_MINOR_MAX:
        raise validation_failed(f"daily_max_minor must be an integer from 1 to {ALLOWANCE_MINOR_MAX}")
    currency = data.get("currency")
    if currency not in CURRENCY_LEDGER:
        message = f"currency must be one of {', '.join(sorted(CURRENCY_LEDGER))}"
        raise validation_failed(message, ErrorCode.UNSUPPORTED_CURRENCY)
    return amount, currency


def _allowance_query(request: web.Request) -> tuple[int, str]:
    query = request.query
    if set(query) != {"daily_max_minor", "currency"} or len(query) != 2:
        raise validation_failed("send ?daily_max_minor=N&currency=THB (or the JSON body), each once")
    text = query["daily_max_minor"]
    if not (text.isascii() and text.isdigit() and len(text) <= 16):
        raise validation_failed(f"daily_max_minor must be an integer from 1 to {ALLOWANCE_MINOR_MAX}")
    return _allowance_body(orjson.dumps({"daily_max_minor": int(text), "currency": query["currency"]}))


async def delete_allowance(request: web.Request) -> web.Response:
    user_id = acting_user(request, required=True)
    assert user_id is not None
    revoked = await allowances.revoke(request.app[DATABASE], user_id, _merchant_id(request))
    return json_response({"revoked": revoked})


async def list_allowances(request: web.Request) -> web.Response:
    user_id = acting_user(request, required=True)
    assert user_id is not None
    today = datetime.now(WALLET_TIME_ZONE).date()
    rows = await allowances.list_for_user(request.app[DATABASE], user_id, today)
    return json_response({"items": [_allowance_json(row, row["used_today_minor"]) for row in rows]})


def _allowance_json(row: Any, used_today_minor: int | None) -> dict[str, Any]:
    body = {
        "merchant_id": row["merchant_id"],
        "currency": row["currency"],
        "daily_max_minor": row["daily_max_minor"],
        "granted_at": row["granted_at"].isoformat(),
    }
    if used_today_minor is not None:
        body["used_today_minor"] = used_today_minor
    return body
